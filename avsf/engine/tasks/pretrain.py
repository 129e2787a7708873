"""Self-supervised pretraining (``model.task = "pretrain"``; paper section 6, appendix A.1, A.8):
pretext tasks, no labels. ``model.pretext`` holds any of:

- ``rot``: every training clip is rotated by 0, 90, 180 or 270 degrees (the same rotation for
  every frame of both its Slow and its Fast input; audio untouched) and a 4-way softmax head on
  the pooled visual features (``model.rot_head``) predicts which. The rotation of clip ``i`` in
  step ``s`` is drawn from a generator seeded by (seed, "rotation", s, rank), so a resumed run
  rotates exactly as an uninterrupted one. Validation rotates item ``j`` (video v, view w) by
  ``(v + w) % 4``: fixed and balanced, no randomness.
- ``avs``: the hierarchical AVS loss of the model (avsf/models/avs.py) with the data side's
  negatives and curriculum (easy only until ``data.curriculum_switch`` of training, then
  ``data.hard_negative_fraction`` hard ones >= ``data.hard_negative_min_shift_s`` apart). The
  trainer adds it as in supervised runs. Validation uses easy negatives only (the audio of the
  next clip of the batch).

A pretraining run has no labels to test: its final metrics (``rot_top1``, ``loss_rot``,
``loss_avs``) are the pretext metrics on the val split.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avsf.engine import distributed as ddp
from avsf.engine import runtime
from avsf.engine.tasks.base import StepLoss, Task, evaluation_batches
from avsf.errors import UserError

NUM_ROTATIONS = 4  # 0, 90, 180, 270 degrees
VISUAL_KEYS = ("slow", "fast")


def rotate_clips(batch: dict[str, Any], labels: Tensor) -> dict[str, Any]:
    """A copy of `batch` with clip i of "slow" and "fast" ([N, 3, T, H, W]) rotated by
    ``labels[i] * 90`` degrees (``torch.rot90`` over H, W: the same for every frame and both
    pathways) and ``"rot_label"`` = labels [N] int64."""
    out = dict(batch)
    labels = labels.to(torch.long)
    for key in VISUAL_KEYS:
        if key not in batch:
            continue
        x = batch[key]
        if x.shape[-1] != x.shape[-2]:
            raise UserError(f"rotation needs square crops; {key!r} is {list(x.shape)} (H != W)")
        rotated = x.clone()
        for k in range(1, NUM_ROTATIONS):
            idx = (labels == k).nonzero(as_tuple=True)[0].to(x.device)
            if len(idx):
                rotated[idx] = torch.rot90(x[idx], k, dims=(-2, -1))
        out[key] = rotated
    out["rot_label"] = labels.to(next(iter(batch[k] for k in VISUAL_KEYS if k in batch)).device)
    return out


def draw_rotations(n: int, *, seed: int, step: int, rank: int = 0) -> Tensor:
    """The rotations (0..3) of the n clips of training step `step`: a function of (seed, step, rank)."""
    g = torch.Generator().manual_seed(runtime.derive_seed(seed, "rotation", step, rank))
    return torch.randint(0, NUM_ROTATIONS, (n,), generator=g)


class PretrainTask(Task):
    name = "pretrain"
    final_split = "val"  # no labels to test

    @property
    def pretext(self) -> tuple[str, ...]:
        return tuple(self.cfg.model.pretext)

    def prepare_batch(self, batch: dict[str, Any], *, device: torch.device, step: int | None = None,
                      rank: int = 0) -> dict[str, Any]:
        """Training (`step` given): clips rotated by :func:`draw_rotations` when "rot" is a pretext
        task. Evaluation: item (video v, view w) rotated by ``(v + w) % 4``, and with "avs" each
        clip's negative is the next clip's audio (``"audio_neg"``; none for a batch of one)."""
        batch = super().prepare_batch(batch, device=device)
        if step is not None:
            if "rot" not in self.pretext:
                return batch
            n = int(batch["slow"].shape[0])
            return rotate_clips(batch, draw_rotations(n, seed=self.cfg.seed, step=step, rank=rank))
        n = int(batch["video_index"].shape[0])
        if "rot" in self.pretext:
            batch = rotate_clips(batch, (batch["video_index"] + batch["view_index"]) % NUM_ROTATIONS)
        if "avs" in self.pretext and n > 1:
            batch["audio_neg"] = batch["audio"].roll(1, dims=0)
        return batch

    def loss(self, outputs: dict[str, Tensor], batch: dict[str, Any]) -> StepLoss:
        """``rot_weight`` x the rotation cross-entropy (zero without rot), logged as ``loss_rot``
        (unweighted) and ``rot_top1`` (%); hits are rotation hits."""
        if "rot" not in self.pretext:
            ref = next(v for v in outputs.values()) if outputs else torch.zeros(())
            return StepLoss(loss=ref.new_zeros(()).float(), hits=0)
        logits, labels = outputs["rot_logits"].float(), batch["rot_label"]
        ce = F.cross_entropy(logits, labels)
        hits = int((logits.argmax(1) == labels).sum())
        logs = {"loss_rot": float(ce.detach()), "rot_top1": 100.0 * hits / max(len(labels), 1)}
        return StepLoss(loss=self.cfg.model.rot_weight * ce, hits=hits, logs=logs)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, dataset: Any, *, device: torch.device, rank: int = 0,
                 world_size: int = 1) -> dict[str, float]:
        """Pretext metrics in eval mode: ``rot_top1`` (%) and ``loss_rot`` (rot), ``loss_avs``
        (avs, easy negatives). Means over items (rot) and batches (avs)."""
        sums = torch.zeros(5, dtype=torch.float64)  # rot items, rot hits, rot loss sum, avs batches, avs loss sum
        for batch, out in evaluation_batches(model, dataset, task=self, device=device, rank=rank,
                                             world_size=world_size):
            if "rot" in self.pretext:
                logits = out["rot_logits"].float()
                sums[0] += int(batch["video_index"].shape[0])
                sums[1] += float((logits.argmax(1) == batch["rot_label"]).sum())
                sums[2] += float(F.cross_entropy(logits, batch["rot_label"], reduction="sum"))
            if "avs_loss" in out:
                sums[3] += 1
                sums[4] += float(out["avs_loss"])
        sums = ddp.all_reduce_sum(sums.to(device)).cpu() if world_size > 1 else sums
        metrics: dict[str, float] = {}
        if "rot" in self.pretext:
            metrics["rot_top1"] = 100.0 * float(sums[1]) / max(float(sums[0]), 1.0)
            metrics["loss_rot"] = float(sums[2]) / max(float(sums[0]), 1.0)
        if "avs" in self.pretext:
            metrics["loss_avs"] = float(sums[4]) / max(float(sums[3]), 1.0)
        return metrics

    def headline(self, metrics: dict[str, Any], *, prefix: str) -> dict[str, float]:
        """Every pretext metric (there are at most three)."""
        return {f"{prefix}_{k}": round(v, 6) for k, v in metrics.items()}

    def metrics_from_headline(self, line: dict[str, Any], *, prefix: str) -> dict[str, Any] | None:
        found = {k[len(prefix) + 1:]: v for k, v in line.items() if k.startswith(f"{prefix}_")}
        return found or None

    def final_fields(self) -> dict[str, Any]:
        return {"task": "pretrain", "pretext": list(self.pretext)}
