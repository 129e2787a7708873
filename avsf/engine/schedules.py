"""Learning-rate schedules, indexed by the global training step (iteration) so that a resumed
run reproduces the uninterrupted one exactly.

The peak rate scales linearly with the global batch (the paper: 1.6 at 1024 == 0.1 at 64):
``peak = base_lr * global_batch / reference_batch``. The warm-up start rate scales with it, so
the ratio warm-up start / peak stays the preset's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from avsf.config import ConfigError, SolverConfig


@dataclass(frozen=True)
class LrSchedule:
    """lr(step) for ``total_steps`` iterations: linear warm-up, then cosine or steps.

    - cosine: ``peak * 0.5 * (1 + cos(pi * step / total_steps))`` (half-period cosine to 0).
    - steps: ``peak * gamma ** (number of boundaries passed)``, boundaries at the fractions
      ``milestones`` of ``total_steps``.
    - warm-up: during the first ``warmup_steps`` the rate goes linearly from ``warmup_start``
      to the main schedule's value at ``warmup_steps`` (so there is no jump when it ends).
    """

    peak: float
    total_steps: int
    warmup_steps: int = 0
    warmup_start: float = 0.0
    kind: str = "cosine"
    milestones: tuple[float, ...] = ()
    gamma: float = 0.1

    def main(self, step: int) -> float:
        """The schedule without warm-up at `step`."""
        if self.kind == "cosine":
            frac = min(max(step / max(self.total_steps, 1), 0.0), 1.0)
            return self.peak * 0.5 * (1.0 + math.cos(math.pi * frac))
        if self.kind == "steps":
            passed = sum(1 for m in self.milestones if step >= m * self.total_steps)
            return self.peak * self.gamma ** passed
        raise ConfigError(f"solver.schedule={self.kind!r} is not allowed; choose one of cosine, steps")

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            end = self.main(self.warmup_steps)
            return self.warmup_start + (end - self.warmup_start) * step / self.warmup_steps
        return self.main(step)


def scaled_lr(*, base_lr: float, global_batch: int, reference_batch: int) -> float:
    """The linear scaling rule: ``base_lr`` is the rate at ``reference_batch`` clips per step."""
    if reference_batch < 1:
        raise ConfigError(f"solver.reference_batch={reference_batch} must be at least 1")
    return base_lr * global_batch / reference_batch


def build_schedule(solver: SolverConfig, *, steps_per_epoch: int, world_size: int) -> LrSchedule:
    """The schedule of a run with `steps_per_epoch` iterations per epoch on `world_size` processes."""
    if steps_per_epoch < 1:
        raise ConfigError("the training split gives no full batch per process; lower solver.batch_size "
                          "or use a larger dataset")
    for m in solver.steps:
        if not 0.0 < m < 1.0:
            raise ConfigError(f"solver.steps={solver.steps}: each drop must be a fraction of training in (0, 1)")
    if solver.schedule == "steps" and not solver.steps:
        raise ConfigError("solver.schedule=steps needs solver.steps, e.g. solver.steps=[0.667,0.833]")
    global_batch = solver.batch_size * world_size
    scale = global_batch / solver.reference_batch
    return LrSchedule(
        peak=scaled_lr(base_lr=solver.base_lr, global_batch=global_batch, reference_batch=solver.reference_batch),
        total_steps=solver.epochs * steps_per_epoch,
        warmup_steps=int(round(solver.warmup_epochs * steps_per_epoch)),
        warmup_start=solver.warmup_start_lr * scale,
        kind=solver.schedule,
        milestones=tuple(solver.steps),
        gamma=solver.gamma,
    )
