"""Testing a model: the metrics of a run's task on a split, written to ``RUN_DIR/final.json``
with the model's params and GFLOPs x views.

What is scored and how is the run's task's (:mod:`avsf.engine.tasks`): a classifier is tested
over every (video, view) item, a detector (AVA) per person box and keyframe, a pretraining run
on its pretext tasks on the val split (its :attr:`~avsf.engine.tasks.Task.final_split`).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from avsf.config import ConfigError, RunConfig
from avsf.fingerprint import environment_fingerprint
from avsf.engine import distributed as ddp
from avsf.engine import runtime
from avsf.engine.checkpoint import load_latest
from avsf.engine.io import atomic_write_json
from avsf.engine.tasks import task_for
from avsf.engine.transfer import INIT_RECORD
from avsf.errors import UserError

log = logging.getLogger("avsf.engine")


def evaluate_model(model: nn.Module, cfg: RunConfig, *, split: str, device: torch.device, rank: int = 0,
                   world_size: int = 1, dataset: Any = None) -> dict[str, Any]:
    """The metrics of `model` on `split` (or on `dataset`, a dataset of that split), by the
    run's task (:meth:`avsf.engine.tasks.Task.evaluate`)."""
    dataset = dataset if dataset is not None else runtime.build_dataset(cfg, split)
    return task_for(cfg).evaluate(model, dataset, device=device, rank=rank, world_size=world_size)


def compute_cost(cfg: RunConfig) -> dict[str, Any]:
    """Params and GFLOPs per view at the test crop (the paper's convention), and x views."""
    from avsf.flops import count_model

    crop, width = task_for(cfg).cost_input_size(cfg.data)
    cost = count_model(cfg.model, crop, width=width)
    views = cfg.data.num_temporal_views * cfg.data.num_spatial_views
    return {"params": int(cost["params"]), "gflops": float(cost["gflops"]),
            "gflops_audio": float(cost["gflops_audio"]), "views": views,
            "gflops_x_views": f"{float(cost['gflops']):.2f} x {views}",
            "gflops_total": float(cost["gflops"]) * views}


def write_final(run_dir: Path, cfg: RunConfig, metrics: dict[str, Any], *, split: str, **extra: Any) -> dict[str, Any]:
    """Write final.json: the run's identity, its cost, the `metrics` of `split` and `extra`
    (the task's :meth:`~avsf.engine.tasks.Task.final_fields`, step, times, ...)."""
    final = {"name": cfg.name, "seed": cfg.seed, "config_hash": cfg.config_hash(), "split": split,
             "num_temporal_views": cfg.data.num_temporal_views, "num_spatial_views": cfg.data.num_spatial_views,
             **compute_cost(cfg), **metrics, **extra, "environment": environment_fingerprint()}
    atomic_write_json(Path(run_dir) / "final.json", final)
    return final


def load_run_config(run_dir: str | Path) -> RunConfig:
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise UserError(f"{run_dir} is not a run directory (no config.json); train one with "
                        f"`avsf train --preset NAME --out {run_dir}`")
    try:
        return RunConfig.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, ConfigError) as e:
        raise UserError(f"{path} cannot be read as a run config ({e}); train anew with --fresh") from None


def evaluate(run_dir: str | Path, *, dataset: Any = None) -> dict[str, Any]:
    """Test the newest valid checkpoint of `run_dir` (multi-view, the config's views) and
    write ``final.json``; returns its contents. ``dataset``: the test split, when the caller has
    already built it from the same config (listing and checking a split of real files is slow)."""
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    device = runtime.resolve_device(cfg.device)
    with ddp.process_group(use_cuda=device.type == "cuda") as info, \
            runtime.run_logging(run_dir / "log.txt" if info.is_main else None), \
            runtime.cpu_threads(device=device, num_workers=cfg.data.num_workers):
        device = runtime.resolve_device(cfg.device)  # again: joining the group set this rank's GPU
        found = load_latest(run_dir / "checkpoints")
        if found is None:
            raise UserError(f"{run_dir}/checkpoints holds no valid checkpoint; train first with "
                            f"`avsf train --preset {cfg.name} --out {run_dir}`")
        state, path = found
        model = runtime.build_model(cfg)
        model.load_state_dict(state["model"])
        model.to(device)
        if device.type == "cuda":
            runtime.to_channels_last(model)
        task = task_for(cfg)
        split = task.final_split
        log.info("testing %s on %s (%d x %d views)", path, split, cfg.data.num_temporal_views,
                 cfg.data.num_spatial_views)
        t0 = time.perf_counter()
        if dataset is None:
            dataset = runtime.build_dataset(cfg, split)
        metrics = task.evaluate(model, dataset, device=device, rank=info.rank, world_size=info.world_size)
        final = {}
        if info.is_main:
            init = run_dir / INIT_RECORD  # the checkpoint a transfer run started from
            extra = {"init_from": json.loads(init.read_text())} if init.is_file() else {}
            final = write_final(run_dir, cfg, metrics, split=split, **task.final_fields(), checkpoint=path.name,
                                step=int(state["step"]), test_wall_time_s=round(time.perf_counter() - t0, 3), **extra)
            log.info("%s: %s", split, ", ".join(f"{k} {v:.4g}" for k, v in task.headline(metrics, prefix=split).items()))
        return ddp.broadcast_object(final)


def evaluate_file(path: str | Path, cfg: RunConfig, out_dir: str | Path) -> dict[str, Any]:
    """Test a model file that is no run's checkpoint (an ``avsf convert`` output, or any torch
    file whose ``model`` entry is a state dict) with `cfg`'s data, views and model: `out_dir`
    becomes a run directory (config.json with the file's class count, its weights as
    checkpoints/ckpt-<step>.pt) and :func:`evaluate` writes its final.json.

    UserError when the file is not such a torch file, its weights do not fit `cfg`'s model
    (naming the keys), or its head's class count differs from the dataset's."""
    from avsf.engine.checkpoint import capture_rng_state, save_checkpoint

    path, out_dir = Path(path), Path(out_dir)
    if not path.is_file():
        raise UserError(f"--checkpoint {path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - not a torch file, or one holding more than weights
        raise UserError(f"--checkpoint {path}: not a torch file of weights and plain data ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise UserError(f"--checkpoint {path}: holds no 'model' state dict (an avsf checkpoint or `avsf convert` output)")
    cfg = RunConfig.from_dict(cfg.to_dict())
    recorded = (state.get("model_config") or {}).get("num_classes")
    if recorded:
        cfg.model.num_classes = int(recorded)
    split_set = runtime.build_dataset(cfg, task_for(cfg).final_split)
    cfg = runtime.resolve_config(cfg, split_set)
    if cfg.model.num_classes != int(split_set.num_classes):
        raise UserError(f"--checkpoint {path}: its head has {cfg.model.num_classes} classes and the test data "
                        f"{split_set.num_classes}: test it on the dataset it was trained for (--set data.root=...)")
    own, weights = runtime.build_model(cfg).state_dict(), state["model"]
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    reshaped = [k for k in own if k in weights and tuple(weights[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or reshaped:
        raise UserError(f"--checkpoint {path}: its weights do not fit preset {cfg.name}: {len(missing)} missing, "
                        f"{len(unexpected)} unexpected, {len(reshaped)} of another shape "
                        f"(e.g. {', '.join((missing + unexpected + reshaped)[:4])})")
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "config.json", cfg.to_dict())
    step = int(state.get("step", 0))
    save_checkpoint({"model": state["model"], "optimizer": {}, "step": step, "epoch": 0, "batch_in_epoch": 0,
                     "rng": capture_rng_state(), "source_file": path.name}, ckpt_dir=out_dir / "checkpoints", keep=1)
    return evaluate(out_dir, dataset=split_set)
