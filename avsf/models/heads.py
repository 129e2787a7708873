"""Classification heads on the pooled pathway features.

Softmax and sigmoid (Charades, multi-label) heads are the same linear layer: the heads return
raw logits and the loss decides. The EPIC head has two linear layers, verb and noun; the
action is the (verb, noun) pair, scored by the evaluator.
"""

from __future__ import annotations

import torch
from torch import nn


class ClassifierHead(nn.Module):
    """Dropout, then Linear: features [N, D] -> {"logits": [N, K]}."""

    def __init__(self, *, dim_in: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(dim_in, num_classes)

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.fc(self.dropout(features))}


class EpicHead(nn.Module):
    """Dropout, then two Linears: [N, D] -> {"verb_logits": [N, V], "noun_logits": [N, M]}."""

    def __init__(self, *, dim_in: int, num_verbs: int, num_nouns: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.verb = nn.Linear(dim_in, num_verbs)
        self.noun = nn.Linear(dim_in, num_nouns)

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.dropout(features)
        return {"verb_logits": self.verb(x), "noun_logits": self.noun(x)}
