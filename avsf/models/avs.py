"""Hierarchical audiovisual synchronisation (AVS, paper section 3.2).

Batch layout (one, explicit): the Audio pathway runs on ``torch.cat([audio, audio_neg])``,
2N rows. Row i (< N) is the audio aligned with visual clip i; row N + i is the negative for
visual clip i. Pairs are (visual_i, audio_i) positive and (visual_i, audio_{N+i}) negative.
Only rows < N feed the laterals and the head. (The authors' code interleaved positives and
negatives but split them as two blocks, pairing clips with the wrong audio.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Cosine similarity of the raw log-mels above which the negative is the same audio as the
# positive (e.g. a looped or static sound track): such pairs teach nothing and are skipped.
DUPLICATE_SIMILARITY = 0.99999


class AVSProjection(nn.Module):
    """Projects pooled visual and audio features of one junction to `dim`, L2-normalised and
    scaled by `scale` (0.5, so squared distances lie in [0, 1]).

    visual [N, C_v] and audio [M, C_a] -> ([N, dim], [M, dim]).
    """

    def __init__(self, *, dim_visual: int, dim_audio: int, dim: int, scale: float) -> None:
        super().__init__()
        self.visual = nn.Linear(dim_visual, dim)
        self.audio = nn.Linear(dim_audio, dim)
        self.scale = scale

    def forward(self, visual: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v = F.normalize(self.visual(visual), dim=1) * self.scale
        a = F.normalize(self.audio(audio), dim=1) * self.scale
        return v, a


def margin_contrastive_loss(*, visual: torch.Tensor, audio_pos: torch.Tensor, audio_neg: torch.Tensor,
                            weight: torch.Tensor, margin: float) -> torch.Tensor:
    """The contrastive loss of Korbar et al. 2018, averaged over the kept pairs.

    visual, audio_pos, audio_neg: [N, D]; weight: [N] (1 = keep the pair, 0 = filtered out).
    loss = sum_i w_i (||v_i - p_i||^2 + max(0, margin - ||v_i - n_i||)^2) / (2 sum_i w_i).
    Weights multiply rather than index, so a batch with every pair filtered gives 0 with the
    projections still in the graph.
    """
    pos = (visual - audio_pos).pow(2).sum(dim=1)
    neg = (margin - (visual - audio_neg).norm(dim=1)).clamp(min=0).pow(2)
    return (weight * (pos + neg)).sum() / (2 * weight.sum()).clamp(min=1.0)


@torch.no_grad()
def pair_weights(*, audio: torch.Tensor, audio_neg: torch.Tensor, silence_var: float,
                 duplicate_similarity: float = DUPLICATE_SIMILARITY) -> torch.Tensor:
    """[N] float weights: 0 for pairs where either log-mel is near-silent (variance below
    `silence_var`) or the negative duplicates the positive; 1 otherwise.

    audio, audio_neg: [N, 1, T, F] network inputs (normalised log-mels).
    """
    pos, neg = audio.flatten(1).float(), audio_neg.flatten(1).float()
    audible = (pos.var(dim=1) > silence_var) & (neg.var(dim=1) > silence_var)
    distinct = (F.normalize(pos, dim=1) * F.normalize(neg, dim=1)).sum(dim=1) < duplicate_similarity
    return (audible & distinct).to(audio.dtype)
