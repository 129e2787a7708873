"""Task losses by head: cross-entropy (single label), BCE with logits (multi-label), and
verb + noun cross-entropy (EPIC)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def task_loss(outputs: dict[str, Tensor], batch: dict[str, Tensor], *, head: str) -> Tensor:
    """Scalar loss, mean over the batch.

    - ``softmax``: ``outputs["logits"]`` [N,K], ``batch["label"]`` [N] int64.
    - ``sigmoid``: ``outputs["logits"]`` [N,K], ``batch["label"]`` [N,K] float multi-hot.
    - ``epic``: ``outputs["verb_logits"]`` [N,V] / ``"noun_logits"`` [N,M] with ``batch["verb"]`` /
      ``batch["noun"]`` [N] int64; the sum of the two cross-entropies.
    """
    if head == "softmax":
        return F.cross_entropy(outputs["logits"].float(), batch["label"])
    if head == "sigmoid":
        return F.binary_cross_entropy_with_logits(outputs["logits"].float(), batch["label"].float())
    if head == "epic":
        return (F.cross_entropy(outputs["verb_logits"].float(), batch["verb"])
                + F.cross_entropy(outputs["noun_logits"].float(), batch["noun"]))
    raise ValueError(f"unknown head {head!r}")


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
