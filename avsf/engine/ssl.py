"""Self-supervised pretraining (pretext tasks) and transfer (paper section 6, appendix A.1, A.8).

Pretraining (``model.task = "pretrain"``, ``model.pretext`` any of ``"avs"``, ``"rot"``) uses no
labels:

- ``rot``: every training clip is rotated by 0, 90, 180 or 270 degrees (the same rotation for
  every frame of both its Slow and its Fast input; audio untouched) and a 4-way softmax head on
  the pooled visual features (``model.rot_head``) predicts which. The rotation of clip ``i`` in
  step ``s`` is drawn from a generator seeded by (seed, "rotation", s, rank), so a resumed run
  rotates exactly as an uninterrupted one. Validation rotates item ``j`` (video v, view w) by
  ``(v + w) % 4``: fixed and balanced, no randomness.
- ``avs``: the hierarchical AVS loss of the model (avsf/models/avs.py) with the data side's
  negatives and curriculum (easy only until ``data.curriculum_switch`` of training, then
  ``data.hard_negative_fraction`` hard ones >= ``data.hard_negative_min_shift_s`` apart).
  Validation uses easy negatives only (the audio of the next video of the batch).

Transfer (``model.init_from``, ``model.freeze``): the backbone of a checkpoint is loaded, the
classifier head, the rotation head and the AVS projections are not (:data:`SKIPPED_PREFIXES`);
``freeze = "backbone"`` (the linear probe) leaves only ``head.fc`` trainable and keeps every
other module in eval mode (BN statistics frozen, no DropPathway).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avsf.config import RunConfig
from avsf.engine import distributed as ddp
from avsf.engine import runtime
from avsf.engine.checkpoint import list_checkpoints, load_checkpoint, load_latest
from avsf.engine.io import atomic_write_json
from avsf.errors import UserError

log = logging.getLogger("avsf.engine")

NUM_ROTATIONS = 4  # 0, 90, 180, 270 degrees
SKIPPED_PREFIXES = ("head.", "rot_head.", "avs.")  # task and pretext layers: never transferred
INIT_RECORD = "init_from.json"  # in the transfer run's directory: which checkpoint it started from
VISUAL_KEYS = ("slow", "fast")


def is_pretrain(cfg: RunConfig) -> bool:
    return cfg.model.task == "pretrain"


# --- rotation -----------------------------------------------------------------------------------
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


def prepare_pretext_batch(batch: dict[str, Any], cfg: RunConfig, *, step: int, rank: int = 0) -> dict[str, Any]:
    """A training batch of a pretrain run: rotated when "rot" is a pretext task."""
    if "rot" not in cfg.model.pretext:
        return batch
    n = int(batch["slow"].shape[0])
    return rotate_clips(batch, draw_rotations(n, seed=cfg.seed, step=step, rank=rank))


def pretext_loss(outputs: dict[str, Tensor], batch: dict[str, Any], cfg: RunConfig) -> tuple[Tensor, dict[str, float], int]:
    """(the rotation part of the loss (zero without rot), {"loss_rot", "rot_top1"}, rotation hits).
    The AVS part is ``outputs["avs_loss"]``, added by the trainer as in supervised runs."""
    if "rot" not in cfg.model.pretext:
        ref = next(v for v in outputs.values()) if outputs else torch.zeros(())
        return ref.new_zeros(()).float(), {}, 0
    logits, labels = outputs["rot_logits"].float(), batch["rot_label"]
    ce = F.cross_entropy(logits, labels)
    hits = int((logits.argmax(1) == labels).sum())
    stats = {"loss_rot": float(ce.detach()), "rot_top1": 100.0 * hits / max(len(labels), 1)}
    return cfg.model.rot_weight * ce, stats, hits


@torch.no_grad()
def evaluate_pretext(model: nn.Module, cfg: RunConfig, *, split: str, device: torch.device, rank: int = 0,
                     world_size: int = 1, dataset: Any = None) -> dict[str, float]:
    """Pretext metrics on `split` in eval mode: ``rot_top1`` (%) and ``loss_rot`` (rot), ``loss_avs``
    (avs, easy negatives: each clip against the next clip's audio of the batch). Means over items."""
    dataset = dataset if dataset is not None else runtime.build_dataset(cfg, split)
    was_training = model.training
    model.eval()
    loader = runtime.build_loader(dataset, batch_size=cfg.solver.batch_size, num_workers=cfg.data.num_workers,
                                  shuffle=False, seed=cfg.seed, epoch=0, rank=rank, world_size=world_size,
                                  drop_last=False)
    sums = torch.zeros(5, dtype=torch.float64)  # rot items, rot hits, rot loss sum, avs batches, avs loss sum
    pretext = cfg.model.pretext
    for batch in loader:
        batch = runtime.batch_to_device(batch, cfg, device)
        n = int(batch["video_index"].shape[0])
        if "rot" in pretext:
            labels = (batch["video_index"] + batch["view_index"]) % NUM_ROTATIONS
            batch = rotate_clips(batch, labels)
        if "avs" in pretext and n > 1:
            batch["audio_neg"] = batch["audio"].roll(1, dims=0)
        with runtime.autocast(device, bf16=cfg.bf16):
            out = model(batch)
        if "rot" in pretext:
            logits = out["rot_logits"].float()
            sums[0] += n
            sums[1] += float((logits.argmax(1) == batch["rot_label"]).sum())
            sums[2] += float(F.cross_entropy(logits, batch["rot_label"], reduction="sum"))
        if "avs_loss" in out:
            sums[3] += 1
            sums[4] += float(out["avs_loss"])
    model.train(was_training)
    sums = ddp.all_reduce_sum(sums.to(device)).cpu() if world_size > 1 else sums
    metrics: dict[str, float] = {}
    if "rot" in pretext:
        metrics["rot_top1"] = 100.0 * float(sums[1]) / max(float(sums[0]), 1.0)
        metrics["loss_rot"] = float(sums[2]) / max(float(sums[0]), 1.0)
    if "avs" in pretext:
        metrics["loss_avs"] = float(sums[4]) / max(float(sums[3]), 1.0)
    return metrics


# --- transfer: init_from and freeze ------------------------------------------------------------------
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
