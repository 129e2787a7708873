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


def evaluate(run_dir: str | Path) -> dict[str, Any]:
    """Test the newest valid checkpoint of `run_dir` (multi-view, the config's views) and
    write ``final.json``; returns its contents."""
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
        metrics = task.evaluate(model, runtime.build_dataset(cfg, split), device=device, rank=info.rank,
                                world_size=info.world_size)
        final = {}
        if info.is_main:
            init = run_dir / INIT_RECORD  # the checkpoint a transfer run started from
            extra = {"init_from": json.loads(init.read_text())} if init.is_file() else {}
            final = write_final(run_dir, cfg, metrics, split=split, **task.final_fields(), checkpoint=path.name,
                                step=int(state["step"]), test_wall_time_s=round(time.perf_counter() - t0, 3), **extra)
            log.info("%s: %s", split, ", ".join(f"{k} {v:.4g}" for k, v in task.headline(metrics, prefix=split).items()))
        return ddp.broadcast_object(final)
