"""Multi-view testing: every (video, view) item of a split is scored, the views of a video are
combined (mean of softmax; max of sigmoid for multi-label), and the video-level metrics are
computed and written to ``RUN_DIR/final.json`` with the model's params and GFLOPs x views.
Detectors (``model.task="detect"``, AVA) are scored per person box and keyframe instead
(:mod:`avsf.engine.ava_eval`: frame-level AP at IoU 0.5, ``map`` and ``per_class_ap``)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from avsf.config import ConfigError, RunConfig
from avsf.fingerprint import environment_fingerprint
from avsf.engine import distributed as ddp
from avsf.engine import metrics as M
from avsf.engine import runtime
from avsf.engine.checkpoint import load_latest
from avsf.engine.io import atomic_write_json
from avsf.engine.losses import task_loss
from avsf.errors import UserError

log = logging.getLogger("avsf.engine")


def _probabilities(outputs: dict[str, Tensor], *, head: str) -> dict[str, Tensor]:
    if head == "softmax":
        return {"scores": outputs["logits"].float().softmax(1)}
    if head == "sigmoid":
        return {"scores": outputs["logits"].float().sigmoid()}
    return {"verb_scores": outputs["verb_logits"].float().softmax(1),
            "noun_scores": outputs["noun_logits"].float().softmax(1)}


def _label_keys(head: str) -> tuple[str, ...]:
    return ("verb", "noun") if head == "epic" else ("label",)


@torch.no_grad()
def predict(model: nn.Module, dataset: Any, *, cfg: RunConfig, device: torch.device, rank: int = 0,
            world_size: int = 1) -> dict[str, Tensor]:
    """Score every item of `dataset` (sharded over ranks, gathered on all of them).

    Returns CPU tensors, one row per distinct (video, view) item, sorted by (video, view):
    ``"video_index"`` [M], ``"view_index"`` [M], the per-view probabilities (``"scores"`` [M,K]
    or ``"verb_scores"``/``"noun_scores"``), the labels (``"label"`` or ``"verb"``/``"noun"``)
    and ``"loss_task"`` [M], the training task loss of each view (so val and train losses compare).
    """
    head = cfg.model.head
    was_training = model.training
    model.eval()
    loader = runtime.build_loader(dataset, batch_size=cfg.solver.batch_size, num_workers=cfg.data.num_workers,
                                  shuffle=False, seed=cfg.seed, epoch=0, rank=rank, world_size=world_size,
                                  drop_last=False)
    parts: dict[str, list[Tensor]] = {}
    for batch in loader:
        batch = runtime.batch_to_device(batch, cfg, device)
        with runtime.autocast(device, bf16=cfg.bf16):
            outputs = model(batch)
        row = _probabilities(outputs, head=head)
        row["loss_task"] = task_loss(outputs, batch, head=head, reduction="none").float()
        for k in ("video_index", "view_index", *_label_keys(head)):
            row[k] = batch[k]
        for k, v in row.items():
            parts.setdefault(k, []).append(v.detach().cpu())
    model.train(was_training)
    local = {k: torch.cat(v) for k, v in parts.items()}
    gathered = [g for g in ddp.all_gather_objects(local) if g]  # a rank may have had no items
    merged = {k: torch.cat([g[k] for g in gathered]) for k in gathered[0]} if gathered else {}
    if not merged or merged["video_index"].numel() == 0:
        raise UserError(f"the evaluation split has no items (dataset {cfg.data.dataset!r} at "
                        f"{cfg.data.root or cfg.data.synthetic_root}); check its csv")
    # a sharded loader may pad ranks with repeats: keep one row per (video, view)
    key = merged["video_index"].long() * 1_000_003 + merged["view_index"].long()
    uniq, inverse = torch.unique(key, sorted=True, return_inverse=True)
    first = torch.full((len(uniq),), len(key), dtype=torch.long).scatter_reduce_(
        0, inverse, torch.arange(len(key)), reduce="amin")
    return {k: v[first] for k, v in merged.items()}


def summarize(pred: dict[str, Tensor], *, head: str, class_names: list[str] | None = None) -> dict[str, Any]:
    """Video-level metrics from :func:`predict`'s rows (percentages)."""
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


def headline(metrics: dict[str, Any], *, prefix: str) -> dict[str, float]:
    """The few numbers a metrics.jsonl line carries: top-1/top-5 (or mAP) and the task loss."""
    keys = (("map",) if "map" in metrics else ("top1", "top5")) + (("loss_task",) if "loss_task" in metrics else ())
    return {f"{prefix}_{k}": round(float(metrics[k]), 6) for k in keys}


def evaluate_model(model: nn.Module, cfg: RunConfig, *, split: str, device: torch.device, rank: int = 0,
                   world_size: int = 1, dataset: Any = None) -> dict[str, Any]:
    """Multi-view metrics of `model` on `split`."""
    dataset = dataset if dataset is not None else runtime.build_dataset(cfg, split)
    if cfg.model.task == "detect":  # AVA: frame-level AP of every scored person box
        from avsf.engine.ava_eval import evaluate_detection

        return evaluate_detection(model, dataset, cfg=cfg, device=device, rank=rank, world_size=world_size)
    pred = predict(model, dataset, cfg=cfg, device=device, rank=rank, world_size=world_size)
    return summarize(pred, head=cfg.model.head, class_names=list(getattr(dataset, "class_names", []) or []) or None)


def compute_cost(cfg: RunConfig) -> dict[str, Any]:
    """Params and GFLOPs per view at the test crop (the paper's convention), and x views."""
    from avsf.flops import count_model

    if cfg.model.task == "detect":  # counted as the paper counts AVA: short side x 1.25 (256 x 320)
        side = cfg.data.test_short_side
        cost = count_model(cfg.model, side, width=int(round(side * 1.25)))
    else:
        cost = count_model(cfg.model, cfg.data.test_crop)
    views = cfg.data.num_temporal_views * cfg.data.num_spatial_views
    return {"params": int(cost["params"]), "gflops": float(cost["gflops"]),
            "gflops_audio": float(cost["gflops_audio"]), "views": views,
            "gflops_x_views": f"{float(cost['gflops']):.2f} x {views}",
            "gflops_total": float(cost["gflops"]) * views}


def write_final(run_dir: Path, cfg: RunConfig, test_metrics: dict[str, Any], **extra: Any) -> dict[str, Any]:
    final = {"name": cfg.name, "seed": cfg.seed, "config_hash": cfg.config_hash(), "split": "test",
             "num_temporal_views": cfg.data.num_temporal_views, "num_spatial_views": cfg.data.num_spatial_views,
             **compute_cost(cfg), **test_metrics, **extra, "environment": environment_fingerprint()}
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
        t0 = time.perf_counter()
        if cfg.model.task == "pretrain":  # self-supervised block: pretext metrics on val, no labels to test
            from avsf.engine import ssl  # noqa: PLC0415

            log.info("pretext metrics of %s on val", path)
            metrics = ssl.evaluate_pretext(model, cfg, split="val", device=device, rank=info.rank,
                                           world_size=info.world_size)
            final = {}
            if info.is_main:
                final = write_final(run_dir, cfg, metrics, split="val", task="pretrain", pretext=list(cfg.model.pretext),
                                    checkpoint=path.name, step=int(state["step"]),
                                    test_wall_time_s=round(time.perf_counter() - t0, 3))
            return ddp.broadcast_object(final)
        log.info("testing %s (%d x %d views)", path, cfg.data.num_temporal_views, cfg.data.num_spatial_views)
        metrics = evaluate_model(model, cfg, split="test", device=device, rank=info.rank,
                                 world_size=info.world_size)
        final = {}
        if info.is_main:
            init = run_dir / "init_from.json"  # self-supervised block: the checkpoint a transfer run started from
            extra = {"init_from": json.loads(init.read_text())} if init.is_file() else {}
            final = write_final(run_dir, cfg, metrics, checkpoint=path.name, step=int(state["step"]),
                                test_wall_time_s=round(time.perf_counter() - t0, 3), **extra)
            log.info("test top-1 %s", final.get("top1", final.get("map")))
        return ddp.broadcast_object(final)
