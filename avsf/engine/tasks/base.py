"""The task interface of the engine, and the evaluation loop every task shares.

A task is what a run trains its network for (``model.task``). The trainer and the evaluator
run one loop for all of them and ask the run's :class:`Task` for the four parts that differ:

1. :meth:`Task.prepare_batch`: the loader's batch on the device, plus what the task adds to it
   (a pretraining run rotates its clips and adds the rotation targets).
2. :meth:`Task.loss`: the task's part of a training step's loss (the AVS loss, which any
   AVSlowFast may give, is added by the trainer), with the step's hits and logs.
3. :meth:`Task.evaluate`: the metrics of a model on a dataset, reduced from the batches of
   :func:`evaluation_batches`; :meth:`Task.headline` picks the numbers a metrics.jsonl line
   carries.
4. :attr:`Task.final_split`: the split final.json's metrics come from, and
   :meth:`Task.final_fields`, what final.json says about the task.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator

import torch
from torch import Tensor, nn

from avsf.config import DataConfig, RunConfig
from avsf.engine import distributed as ddp
from avsf.engine import runtime


@dataclass
class StepLoss:
    """The task's part of one training step.

    Attributes:
        loss: scalar tensor, the task loss the optimiser minimises (before AVS is added);
            logged as ``train_loss_task``.
        hits: how many of the step's samples the top-1 prediction gets right (``train_top1``
            = hits / clips).
        logs: further step values (floats); the epoch line holds their mean as ``train_<name>``.
    """

    loss: Tensor
    hits: int
    logs: dict[str, float] = field(default_factory=dict)


class Task(ABC):
    """What a run of one ``model.task`` does differently. Built by :func:`avsf.engine.tasks.task_for`."""

    name: ClassVar[str]
    final_split: ClassVar[str] = "test"  # the split final.json's metrics come from

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg

    # --- 1. the batch --------------------------------------------------------------------
    def prepare_batch(self, batch: dict[str, Any], *, device: torch.device, step: int | None = None,
                      rank: int = 0) -> dict[str, Any]:
        """The loader's `batch` on `device` (uint8 video normalised, :func:`runtime.batch_to_device`)
        with the task's inputs and targets. `step`: the training step, which seeds the task's
        random draws with `rank`; None for an evaluation batch."""
        return runtime.batch_to_device(batch, self.cfg, device)

    # --- 2. the loss ---------------------------------------------------------------------
    @abstractmethod
    def loss(self, outputs: dict[str, Tensor], batch: dict[str, Any]) -> StepLoss:
        """The task's loss of a training step from the model's `outputs` on the prepared `batch`."""

    # --- 3. evaluation -------------------------------------------------------------------
    @abstractmethod
    def evaluate(self, model: nn.Module, dataset: Any, *, device: torch.device, rank: int = 0,
                 world_size: int = 1) -> dict[str, Any]:
        """Metrics of `model` on every item of `dataset` (sharded over ranks; every rank gets them)."""

    def headline(self, metrics: dict[str, Any], *, prefix: str) -> dict[str, float]:
        """The few numbers of `metrics` a metrics.jsonl line carries, as ``<prefix>_<name>``:
        top-1/top-5 (or mAP) and the task loss."""
        keys = (("map",) if "map" in metrics else ("top1", "top5")) + (("loss_task",) if "loss_task" in metrics else ())
        return {f"{prefix}_{k}": round(float(metrics[k]), 6) for k in keys}

    def metrics_from_headline(self, line: dict[str, Any], *, prefix: str) -> dict[str, Any] | None:
        """The metrics a metrics.jsonl line's :meth:`headline` holds, when it holds all of them
        (then an evaluation whose numbers a line already has need not run again); else None."""
        return None

    # --- 4. the final record -------------------------------------------------------------
    def final_fields(self) -> dict[str, Any]:
        """What final.json says about the task, beside its metrics."""
        return {}

    def cost_input_size(self, data: DataConfig) -> tuple[int, int | None]:
        """(height, width or None for square) of the input the FLOPs per view are counted at."""
        return data.test_crop, None


@torch.no_grad()
def evaluation_batches(model: nn.Module, dataset: Any, *, task: Task, device: torch.device, rank: int = 0,
                       world_size: int = 1) -> Iterator[tuple[dict[str, Any], dict[str, Tensor]]]:
    """The evaluation loop: yields (prepared batch, model outputs) for this rank's shard of
    `dataset`, in loader order, with the model in eval mode (its mode is restored afterwards).
    The ranks' shards are padded with repeats to equal length (the loader's ``drop_last=False``)."""
    cfg = task.cfg
    was_training = model.training
    model.eval()
    loader = runtime.build_loader(dataset, batch_size=cfg.solver.batch_size, num_workers=cfg.data.num_workers,
                                  shuffle=False, seed=cfg.seed, epoch=0, rank=rank, world_size=world_size,
                                  drop_last=False)
    try:
        for batch in loader:
            batch = task.prepare_batch(batch, device=device)
            with runtime.autocast(device, bf16=cfg.bf16):
                outputs = model(batch)
            yield batch, outputs
    finally:
        model.train(was_training)


def gather_rows(rows: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Per-batch rows (CPU tensors, one dict per batch) of every rank, concatenated batch by
    batch and rank by rank; {} when no rank had any."""
    local = {k: torch.cat([r[k] for r in rows]) for k in rows[0]} if rows else {}
    gathered = [g for g in ddp.all_gather_objects(local) if g]  # a rank may have had no items
    return {k: torch.cat([g[k] for g in gathered]) for k in gathered[0]} if gathered else {}
