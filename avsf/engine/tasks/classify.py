"""Classification (``model.task = "classify"``): a label per clip, tested over many views.

Every (video, view) item of the split is scored; the views of a video are combined (mean of
softmax; max of sigmoid for multi-label) and the video-level metrics computed (percentages):
softmax heads top-1/top-5, per-class accuracy and the confusion matrix; sigmoid heads mAP and
per-class AP; EPIC verb, noun and action top-1/top-5.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from avsf.engine import distributed as ddp
from avsf.engine import metrics as M
from avsf.engine.balance import GBLEND_HEADS, gblend_loss, head_loss_sums
from avsf.engine.losses import batch_top1_hits, task_loss
from avsf.engine.tasks.base import StepLoss, Task, evaluation_batches, gather_rows
from avsf.errors import UserError


class ClassificationTask(Task):
    name = "classify"

    def loss(self, outputs: dict[str, Tensor], batch: dict[str, Any]) -> StepLoss:
        head = self.cfg.model.head
        loss = task_loss(outputs, batch, head=head)
        hits = batch_top1_hits(outputs, batch, head=head)
        if self.cfg.model.balance == "gblend":
            # the weights the config gives, or the trainer's estimate (Trainer._estimate_gblend)
            weights = getattr(self, "gblend_weights", None) or self.cfg.model.gblend_weights
            total, logs = gblend_loss(outputs, batch, fused=loss, weights=weights)
            return StepLoss(loss=total, hits=hits, logs=logs)
        return StepLoss(loss=loss, hits=hits)

    @torch.no_grad()
    def head_losses(self, model: nn.Module, dataset: Any, *, device: torch.device, rank: int = 0,
                    world_size: int = 1) -> dict[str, float]:
        """Mean cross-entropy of each G-Blend head ({"visual", "audio", "fused"}) over `dataset`, in
        eval mode, summed over ranks (their shards, padded with repeats as every evaluation is)."""
        sums = torch.zeros(4, dtype=torch.float64)
        for batch, outputs in evaluation_batches(model, dataset, task=self, device=device, rank=rank,
                                                 world_size=world_size):
            sums += head_loss_sums(outputs, batch["label"])
        sums = ddp.all_reduce_sum(sums.to(device)).cpu()
        return {k: float(sums[j] / max(float(sums[3]), 1.0)) for j, k in enumerate(GBLEND_HEADS)}

    @torch.no_grad()
    def predict(self, model: nn.Module, dataset: Any, *, device: torch.device, rank: int = 0,
                world_size: int = 1) -> dict[str, Tensor]:
        """Score every item of `dataset` (sharded over ranks, gathered on all of them).

        Returns CPU tensors, one row per distinct (video, view) item, sorted by (video, view):
        ``"video_index"`` [M], ``"view_index"`` [M], the per-view probabilities (``"scores"`` [M,K]
        or ``"verb_scores"``/``"noun_scores"``), the labels (``"label"`` or ``"verb"``/``"noun"``)
        and ``"loss_task"`` [M], the training task loss of each view (so val and train losses compare).
        """
        head = self.cfg.model.head
        rows = []
        for batch, outputs in evaluation_batches(model, dataset, task=self, device=device, rank=rank,
                                                 world_size=world_size):
            row = probabilities(outputs, head=head)
            row["loss_task"] = task_loss(outputs, batch, head=head, reduction="none").float()
            for k in ("video_index", "view_index", *label_keys(head)):
                row[k] = batch[k]
            rows.append({k: v.detach().cpu() for k, v in row.items()})
        merged = gather_rows(rows)
        if not merged or merged["video_index"].numel() == 0:
            data = self.cfg.data
            raise UserError(f"the evaluation split has no items (dataset {data.dataset!r} at "
                            f"{data.root or data.synthetic_root}); check its csv")
        # a sharded loader may pad ranks with repeats: keep one row per (video, view)
        key = merged["video_index"].long() * 1_000_003 + merged["view_index"].long()
        uniq, inverse = torch.unique(key, sorted=True, return_inverse=True)
        first = torch.full((len(uniq),), len(key), dtype=torch.long).scatter_reduce_(
            0, inverse, torch.arange(len(key)), reduce="amin")
        return {k: v[first] for k, v in merged.items()}

    def evaluate(self, model: nn.Module, dataset: Any, *, device: torch.device, rank: int = 0,
                 world_size: int = 1) -> dict[str, Any]:
        pred = self.predict(model, dataset, device=device, rank=rank, world_size=world_size)
        names = list(getattr(dataset, "class_names", []) or []) or None
        return summarize(pred, head=self.cfg.model.head, class_names=names)


def probabilities(outputs: dict[str, Tensor], *, head: str) -> dict[str, Tensor]:
    """Per-view class probabilities: ``"scores"`` [N,K] (softmax or sigmoid), or for EPIC
    ``"verb_scores"`` [N,V] and ``"noun_scores"`` [N,M]."""
    if head == "softmax":
        return {"scores": outputs["logits"].float().softmax(1)}
    if head == "sigmoid":
        return {"scores": outputs["logits"].float().sigmoid()}
    return {"verb_scores": outputs["verb_logits"].float().softmax(1),
            "noun_scores": outputs["noun_logits"].float().softmax(1)}


def label_keys(head: str) -> tuple[str, ...]:
    """The batch keys holding a head's targets."""
    return ("verb", "noun") if head == "epic" else ("label",)


def summarize(pred: dict[str, Tensor], *, head: str, class_names: list[str] | None = None) -> dict[str, Any]:
    """Video-level metrics from :meth:`ClassificationTask.predict`'s rows (percentages)."""
    vid = pred["video_index"]
    views = int(torch.bincount(torch.unique(vid, return_inverse=True)[1]).max())
    out: dict[str, Any] = {"num_videos": int(torch.unique(vid).numel()), "views_per_video": views}
    if "loss_task" in pred:  # mean over views of the task loss (the trainer's train_loss_task, on this split)
        out["loss_task"] = float(pred["loss_task"].double().mean())
    if head == "epic":
        videos, verb_s = M.aggregate_views(pred["verb_scores"], vid, reduce="mean")
        _, noun_s = M.aggregate_views(pred["noun_scores"], vid, reduce="mean")
        verbs, nouns = _per_video(pred["verb"], vid), _per_video(pred["noun"], vid)
        for name, s, y in (("verb", verb_s, verbs), ("noun", noun_s, nouns)):
            out.update({f"{name}_{k}": v for k, v in M.topk_accuracy(s, y).items()})
        out.update({f"action_{k}": v for k, v in M.action_topk_accuracy(verb_s, noun_s, verbs, nouns).items()})
        out["top1"], out["top5"] = out["action_top1"], out["action_top5"]
        return out
    if head == "sigmoid":
        videos, scores = M.aggregate_views(pred["scores"], vid, reduce="max")
        targets = _per_video(pred["label"], vid)
        out["map"], aps = M.mean_average_precision(scores, targets)
        names = class_names or [str(c) for c in range(scores.shape[1])]
        out["per_class_ap"] = {names[c]: 100.0 * ap for c, ap in aps.items()}
        return out
    videos, scores = M.aggregate_views(pred["scores"], vid, reduce="mean")
    labels = _per_video(pred["label"], vid)
    out.update(M.topk_accuracy(scores, labels))
    k = scores.shape[1]
    confusion = M.confusion_matrix(scores.argmax(1), labels, num_classes=k)
    names = class_names or [str(c) for c in range(k)]
    out["per_class_accuracy"] = dict(zip(names, M.per_class_accuracy(confusion)))
    out["confusion_matrix"] = confusion.tolist()
    out["class_names"] = list(names)
    return out


def _per_video(values: Tensor, video_index: Tensor) -> Tensor:
    """The label of each video (its first row), in sorted video order."""
    _, inverse = torch.unique(video_index, sorted=True, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), len(inverse), dtype=torch.long).scatter_reduce_(
        0, inverse, torch.arange(len(inverse)), reduce="amin")
    return values[first]
