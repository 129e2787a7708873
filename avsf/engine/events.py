"""TensorBoard event files beside metrics.jsonl (``tensorboard --logdir sweeps/``).

Written by rank 0 only, and only at the log interval (``log_every`` steps), at each epoch's end
and after the test: a step itself only adds a few floats it has already computed to the
interval's meter. Tags:

- ``train/loss``, ``train/loss_task``, ``train/loss_avs``, ``train/avs_loss/<stage>``: step means
  over the interval; ``train/lr``; ``train/droppathway_dropped``: the fraction of the interval's
  steps whose DropPathway draw dropped the audio; ``train/clips_per_s`` (this process's clips).
- ``epoch/<key>``: every number of the epoch's metrics.jsonl line (train and val metrics,
  clips/s, data-wait fraction, peak memory), at the epoch's last step.
- ``<split>/<key>``: the final metrics (test, or val for pretraining) at the last step.

A resumed run purges the events after its checkpoint's step, as metrics.jsonl drops the lines
after it, so the curves show one history. ``tensorboard=false`` in the config writes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from avsf.errors import UserError


def interval_scalars(meter: Any, *, dropped: int, seconds: float, lr: float) -> dict[str, float]:
    """The ``train/*`` scalars of one log interval from `meter`, the trainer's
    :class:`~avsf.engine.train.EpochMeter` of that interval's steps (its sums of clips, losses
    and AVS stage losses), the steps whose DropPathway draw dropped and the interval's wall time."""
    n = max(meter.steps, 1)
    out = {"train/loss": meter.loss / n, "train/loss_task": meter.task / n, "train/loss_avs": meter.avs / n,
           "train/lr": lr, "train/droppathway_dropped": dropped / n,
           "train/clips_per_s": meter.clips / max(seconds, 1e-9)}
    out.update({f"train/{k}": v / n for k, v in sorted(meter.avs_stages.items())})
    return out


class EventLog:
    """A TensorBoard writer for one run directory, or a no-op when disabled (other ranks,
    ``tensorboard=false``). `purge_step`: the first step a resumed run computes again (TensorBoard
    then drops the earlier session's events from that step on)."""

    def __init__(self, run_dir: str | Path, *, enabled: bool, purge_step: int | None = None) -> None:
        self.writer = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415 (imports tensorboard: only when on)
        except ImportError as e:
            raise UserError(f"tensorboard=true (the default) needs the tensorboard package ({e}): pip install "
                            f"tensorboard, or turn the event files off with --set tensorboard=false") from None
        self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge_step)

    def scalars(self, values: dict[str, Any], *, step: int, prefix: str = "") -> None:
        """Every finite number in `values` as ``prefix + key`` at `step` (strings, lists and
        booleans are not curves and are skipped)."""
        if self.writer is None:
            return
        for key, value in values.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if value != value or value in (float("inf"), float("-inf")):
                continue
            self.writer.add_scalar(prefix + key, value, global_step=step)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def event_files(run_dir: str | Path) -> list[Path]:
    """The TensorBoard event files in a run directory."""
    return sorted(Path(run_dir).glob("events.out.tfevents.*"))
