"""Classification heads on the pooled pathway features.

Softmax and sigmoid (Charades, multi-label) heads are the same linear layer: the heads return
raw logits and the loss decides. The EPIC head has two linear layers, verb and noun; the
action is the (verb, noun) pair, scored by the evaluator. The detection head (AVA) pools
each person box from the res5 features (RoIAlign) and scores it per class.
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


class DetectionHead(nn.Module):
    """The AVA detection head (appendix A.7; PySlowFast's ResNetRoIHead, plus audio).

    For each visual pathway's res5 feature [N, C_p, T_p, H', W']: average over time, RoIAlign
    (``aligned=True``, ``sampling_ratio=0``) of every person box to ``resolution`` x
    ``resolution``, then max (or average) pooling over that window -> [R, C_p]. The pathways'
    box features are concatenated with the pooled audio feature of each box's clip
    ([N, C_a] indexed by the box's batch index), then dropout and one linear layer (per-class
    logits; the sigmoid is the loss's and the evaluator's business).

    forward(visual=[slow, fast], audio=[N, C_a] | None, boxes=[R, 5] (batch index, x1, y1, x2,
    y2 in pixels of the input crop), spatial_scale=feature size / input size)
    -> {"logits": [R, K]}.
    """

    def __init__(self, *, dim_in: int, num_classes: int, dropout: float, resolution: int,
                 spatial_pool: str = "max") -> None:
        super().__init__()
        self.resolution = resolution
        self.spatial_pool = spatial_pool
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(dim_in, num_classes)

    def forward(self, *, visual: list[torch.Tensor], audio: torch.Tensor | None, boxes: torch.Tensor,
                spatial_scale: float) -> dict[str, torch.Tensor]:
        from torchvision.ops import roi_align

        feats = []
        rois = boxes.to(dtype=visual[0].dtype)
        for x in visual:
            x = x.mean(dim=2)  # temporal average pool: [N, C, H', W']
            r = roi_align(x, rois, output_size=(self.resolution, self.resolution), spatial_scale=spatial_scale,
                          sampling_ratio=0, aligned=True)  # [R, C, res, res]
            feats.append(r.amax(dim=(2, 3)) if self.spatial_pool == "max" else r.mean(dim=(2, 3)))
        if audio is not None:
            feats.append(audio[boxes[:, 0].long()])
        return {"logits": self.fc(self.dropout(torch.cat(feats, dim=1)))}
