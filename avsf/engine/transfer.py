"""Transfer (``model.init_from``, ``model.freeze``; Table 7's detectors, Table 8 / A.1 / A.2):
a run starts from the backbone of another run's checkpoint, for any task.

The classifier head, the rotation head and the AVS projections are not loaded
(:data:`SKIPPED_PREFIXES`); ``freeze = "backbone"`` (the linear probe) leaves only ``head.fc``
trainable and keeps every other module in eval mode (BN statistics frozen, no DropPathway).
:func:`apply_transfer` runs before the optimiser is built; a resumed run restores from its own
checkpoint and does not reload the source.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from avsf.config import RunConfig
from avsf.engine.checkpoint import list_checkpoints, load_checkpoint, load_latest
from avsf.engine.io import atomic_write_json
from avsf.errors import UserError

log = logging.getLogger("avsf.engine")

SKIPPED_PREFIXES = ("head.", "rot_head.", "avs.")  # task and pretext layers: never transferred
INIT_RECORD = "init_from.json"  # in the transfer run's directory: which checkpoint it started from


def resolve_init_path(init_from: str, run_dir: str | Path) -> Path:
    """`init_from` as a path: absolute as given, relative against the run dir's parent (the sweep
    dir), so configs name a sibling run (``avslowfast_pretrain_tiny-<hash>``) machine-independently."""
    p = Path(init_from).expanduser()
    if not p.is_absolute():
        p = Path(run_dir).absolute().parent / p
    return p


def load_init_checkpoint(init_from: str, run_dir: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the checkpoint's state, {"path", "step", "config_hash"}) for `model.init_from`: a run dir
    (its newest valid checkpoint) or a checkpoint file. Raises UserError when there is none."""
    p = resolve_init_path(init_from, run_dir)
    where = "" if Path(init_from).is_absolute() else f" (relative paths resolve against {Path(run_dir).absolute().parent})"
    if not p.exists():
        raise UserError(f"model.init_from={init_from!r}: {p} does not exist{where}; pretrain that run first "
                        f"or give an existing run dir or checkpoint file")
    if p.is_dir():
        found = load_latest(p / "checkpoints")
        if found is None:
            raise UserError(f"model.init_from={init_from!r}: {p} has no valid checkpoint yet (in {p / 'checkpoints'}); "
                            f"wait for its pretraining to write one, or give a checkpoint file")
        if not (p / "final.json").exists():
            # a source still training (or killed) would hand over a mid-training backbone; the grid
            # runner orders runs so this cannot happen through it
            raise UserError(f"model.init_from={init_from!r}: {p} has not finished (no final.json); wait until "
                            f"it has (avsf status), or name one of its checkpoint files to start from it anyway")
        state, path = found
    else:
        try:
            state, path = load_checkpoint(p), p
        except Exception as e:  # noqa: BLE001 - any unreadable file is the same user error
            raise UserError(f"model.init_from={init_from!r}: {p} is not a readable avsf checkpoint "
                            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    source = {"path": str(path), "step": int(state["step"]), "config_hash": state.get("config_hash"),
              "init_from": init_from}
    return state, source


def backbone_state(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v for k, v in state_dict.items() if not k.startswith(SKIPPED_PREFIXES)}


def load_backbone(model: nn.Module, state_dict: dict[str, Tensor], *, source: str = "the checkpoint") -> list[str]:
    """Copy the backbone tensors of `state_dict` into `model` (skipping SKIPPED_PREFIXES); every
    backbone key must be present on both sides with the same shape, else UserError naming them.
    Returns the keys loaded."""
    src = backbone_state(state_dict)
    dst = backbone_state(model.state_dict())
    missing = sorted(set(dst) - set(src))
    unexpected = sorted(set(src) - set(dst))
    mismatched = sorted(k for k in set(src) & set(dst) if tuple(src[k].shape) != tuple(dst[k].shape))
    if missing or unexpected or mismatched:
        def show(keys):
            return ", ".join(keys[:6]) + (f" ... ({len(keys)} in all)" if len(keys) > 6 else "")
        parts = []
        if mismatched:
            parts.append("shape mismatch at " + show([f"{k} {list(src[k].shape)} vs {list(dst[k].shape)}"
                                                      for k in mismatched]))
        if missing:
            parts.append("missing from the checkpoint: " + show(missing))
        if unexpected:
            parts.append("not in this model: " + show(unexpected))
        raise UserError(f"cannot initialise from {source}: its backbone does not match this model's "
                        f"({'; '.join(parts)}); pretrain with the same model settings (arch, widths, depths, fusion)")
    model.load_state_dict(src, strict=False)
    return sorted(src)


def freeze_backbone(model: nn.Module) -> None:
    """The linear probe: only the classifier's final linear layer trains (see AVSlowFast.freeze_backbone)."""
    if not hasattr(model, "freeze_backbone"):
        raise UserError(f"model.freeze=backbone is not supported for {type(model).__name__}")
    model.freeze_backbone()


def apply_transfer(model: nn.Module, cfg: RunConfig, run_dir: Path, *, is_main: bool = True) -> dict[str, Any] | None:
    """Before the optimiser is built: load `model.init_from` (unless this run already has a
    checkpoint: resuming restores everything) and freeze per `model.freeze`. Returns the record of
    the checkpoint the run started from (also written to ``run_dir/init_from.json``), or None."""
    m = cfg.model
    source = None
    if m.init_from:
        record = run_dir / INIT_RECORD
        if list_checkpoints(run_dir / "checkpoints") and record.is_file():
            source = json.loads(record.read_text())
        else:
            state, source = load_init_checkpoint(m.init_from, run_dir)
            keys = load_backbone(model, state["model"], source=source["path"])
            source["tensors_loaded"] = len(keys)
            if is_main:
                atomic_write_json(record, source)
            log.info("initialised %d backbone tensors from %s (step %d, config %s)", len(keys), source["path"],
                     source["step"], source["config_hash"])
    if m.freeze == "backbone":
        freeze_backbone(model)
    return source
