"""Task losses by head: cross-entropy (single label), BCE with logits (multi-label), and
verb + noun cross-entropy (EPIC)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def task_loss(outputs: dict[str, Tensor], batch: dict[str, Tensor], *, head: str, reduction: str = "mean") -> Tensor:
    """Scalar loss, mean over the batch (``reduction="none"``: one value per clip, [N]).

    - ``softmax``: ``outputs["logits"]`` [N,K], ``batch["label"]`` [N] int64.
    - ``sigmoid``: ``outputs["logits"]`` [N,K], ``batch["label"]`` [N,K] float multi-hot.
    - ``epic``: ``outputs["verb_logits"]`` [N,V] / ``"noun_logits"`` [N,M] with ``batch["verb"]`` /
      ``batch["noun"]`` [N] int64; the sum of the two cross-entropies.
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction={reduction!r}; choose mean or none")
    if head == "softmax":
        per_clip = F.cross_entropy(outputs["logits"].float(), batch["label"], reduction="none")
    elif head == "sigmoid":  # mean over classes per clip, so the batch mean is BCE's default mean
        per_clip = F.binary_cross_entropy_with_logits(outputs["logits"].float(), batch["label"].float(),
                                                      reduction="none").mean(1)
    elif head == "epic":
        per_clip = (F.cross_entropy(outputs["verb_logits"].float(), batch["verb"], reduction="none")
                    + F.cross_entropy(outputs["noun_logits"].float(), batch["noun"], reduction="none"))
    else:
        raise ValueError(f"unknown head {head!r}")
    return per_clip.mean() if reduction == "mean" else per_clip


@torch.no_grad()
def batch_top1_hits(outputs: dict[str, Tensor], batch: dict[str, Tensor], *, head: str) -> int:
    """How many clips of the batch the top-1 prediction gets right (multi-label: the top class is
    one of the positives; EPIC: both verb and noun right, i.e. the action)."""
    if head == "softmax":
        return int((outputs["logits"].argmax(1) == batch["label"]).sum())
    if head == "sigmoid":
        top = outputs["logits"].argmax(1, keepdim=True)
        return int((batch["label"].gather(1, top) > 0).sum())
    if head == "epic":
        verb_ok = outputs["verb_logits"].argmax(1) == batch["verb"]
        noun_ok = outputs["noun_logits"].argmax(1) == batch["noun"]
        return int((verb_ok & noun_ok).sum())
    raise ValueError(f"unknown head {head!r}")
