"""One training run: data -> model -> optimiser -> checkpoints -> metrics.jsonl -> test.

``train(cfg, run_dir)`` resumes from the newest valid checkpoint in ``run_dir`` every time it
is called, so rerunning a command (or a requeued Slurm job) continues where the last one
stopped. Everything random is a function of (seed, epoch, step, rank) or is restored from the
checkpoint, so an interrupted-and-resumed CPU run ends with the same weights, bit for bit, as
an uninterrupted one.

What differs between classification, detection and pretraining (the batch, the loss, the
evaluation, the final split) is the run's task's (:mod:`avsf.engine.tasks`): the loop below is
the same for all of them. Transfer (``model.init_from``, ``model.freeze``) applies to any task
(:mod:`avsf.engine.transfer`).

Preemption: ``request_stop()`` (or setting the ``stop_event`` passed to ``train``) makes the
run write a checkpoint after the current step and return ``{"status": "stopped", ...}``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from avsf.config import RunConfig
from avsf.data.datasets.base import DataGoneError
from avsf.data.loader import count_silent
from avsf.engine import distributed as ddp
from avsf.engine import runtime
from avsf.engine.balance import GBLEND_HEADS, build_balancer, gblend_weights
from avsf.engine.checkpoint import (capture_rng_state, list_checkpoints, load_checkpoint, load_latest,
                                   restore_rng_state, save_checkpoint)
from avsf.engine.evaluate import write_final
from avsf.engine.events import EventLog, event_files, interval_scalars
from avsf.engine.io import atomic_write_json, write_jsonl
from avsf.engine.optim import build_optimizer, set_lr
from avsf.engine.precise_bn import update_bn_stats
from avsf.engine.schedules import build_schedule
from avsf.engine.tasks import task_for
from avsf.engine.transfer import apply_transfer
from avsf.errors import UserError
from avsf.models.droppathway import draw_droppathway
from avsf.portable import hash_form, without_operational

log = logging.getLogger("avsf.engine")

_STOP = threading.Event()
DATA_GONE_MIN_READS = 64  # clip reads in an epoch before the failed fraction is judged


class OutOfMemory(UserError):
    """A training step that did not fit in memory: where, with which batch and crop, what to lower."""


def is_out_of_memory(e: BaseException) -> bool:
    """CUDA's out-of-memory error, Python's MemoryError, or the CPU allocator's failure."""
    if isinstance(e, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(e).lower()
    return isinstance(e, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def out_of_memory_reason(cfg: RunConfig, *, device: torch.device, step: int, clips: int) -> str:
    """The line an out-of-memory step reports: the device (and its memory), the batch, crop and
    frames that did not fit, and what to lower."""
    where = str(device)
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        peak = torch.cuda.max_memory_allocated(device)
        where = f"{torch.cuda.get_device_name(device)} ({total / 2**30:.1f} GiB; {peak / 2**30:.1f} GiB held at peak)"
    m, d = cfg.model, cfg.data
    return (f"out of memory on {where} at step {step}: solver.batch_size={cfg.solver.batch_size} per process "
            f"({clips} clips in this batch), data.train_crop={d.train_crop}, {m.slow_frames} Slow frames x "
            f"alpha {m.alpha}, {m.audio_frames} audio frames, bf16={cfg.bf16}. Lower solver.batch_size (keep "
            f"solver.reference_batch, so the learning rate follows), or data.train_crop, or set bf16=true, "
            f"or spread the batch over more GPUs")


def _batch_clips(batch: dict[str, Any]) -> int:
    """Clips in a batch: the first dimension of its first tensor."""
    return int(next(v for v in batch.values() if isinstance(v, torch.Tensor)).shape[0])


# fields of a metrics line that depend on the machine, not on the computation
TIMING_FIELDS = ("clips_per_s", "wall_time_s", "epoch_time_s", "peak_mem_mb", "data_wait_s", "compute_s",
                 "data_wait_frac")


def request_stop() -> None:
    """Ask every running ``train`` in this process to checkpoint after its current step and
    return. Safe to call from a signal handler or another thread."""
    _STOP.set()


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


class _Lockstep:
    """Loaders of the same length iterated together: a list of their batches per step; the
    files they replaced or that killed a worker, all of them."""

    def __init__(self, loaders: list) -> None:
        self.loaders = loaders

    def __len__(self) -> int:
        return min(len(loader) for loader in self.loaders)

    def __iter__(self):
        return (list(batches) for batches in zip(*self.loaders))

    @property
    def failures(self) -> list:
        return [f for loader in self.loaders for f in getattr(loader, "failures", ())]

    @property
    def crashes(self) -> list:
        return [c for loader in self.loaders for c in getattr(loader, "crashes", ())]


@dataclass
class EpochMeter:
    """Running sums over one epoch's training steps (saved in checkpoints for exact resume)."""

    clips: int = 0
    steps: int = 0
    loss: float = 0.0
    task: float = 0.0
    avs: float = 0.0
    avs_stages: dict[str, float] = field(default_factory=dict)  # sums of the AVS stage losses and the task's logs
    hits: int = 0
    train_time_s: float = 0.0  # in the training step (compute)
    data_wait_s: float = 0.0  # blocked on the loader for the next batch
    data_failures: int = 0  # samples the loader replaced (unreadable files) or files that killed a worker
    silent_clips: int = 0  # clips from files with an audio stream whose audio came out all padding

    def add(self, *, clips: int, loss: float, task: float, avs: float | None, stages: dict[str, float],
            hits: int) -> None:
        self.clips += clips
        self.steps += 1
        self.loss += loss
        self.task += task
        self.avs += avs or 0.0
        for k, v in stages.items():
            self.avs_stages[k] = self.avs_stages.get(k, 0.0) + v
        self.hits += hits

    def add_step_logs(self, logs: dict[str, float], *, micro_batches: int) -> None:
        """Values of a whole step (e.g. OGM-GE's coefficients), counted once per micro-batch so
        their epoch mean weighs steps as :meth:`add`'s do."""
        for k, v in logs.items():
            self.avs_stages[k] = self.avs_stages.get(k, 0.0) + v * micro_batches

    def summary(self) -> dict[str, float]:
        n = max(self.steps, 1)
        out = {"train_loss": self.loss / n, "train_loss_task": self.task / n, "train_loss_avs": self.avs / n,
               "train_top1": 100.0 * self.hits / max(self.clips, 1), "data_failures": self.data_failures,
               "silent_clips": self.silent_clips}
        out.update({f"train_{k}": v / n for k, v in sorted(self.avs_stages.items())})
        return out

    def timing(self) -> dict[str, float]:
        """Where the training loop's time went: waiting for data versus computing."""
        loop = self.data_wait_s + self.train_time_s
        # microseconds: at smoke the wait is often under a millisecond an epoch, and the fraction is
        # checked against these two numbers
        return {"data_wait_s": round(self.data_wait_s, 6), "compute_s": round(self.train_time_s, 6),
                "data_wait_frac": round(self.data_wait_s / loop, 4) if loop > 0 else 0.0}


def _wipe_run_dir(run_dir: Path) -> None:
    """Delete what a run directory holds (``--fresh``)."""
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    for name in ("metrics.jsonl", "final.json", "config.json", "log.txt"):
        (run_dir / name).unlink(missing_ok=True)
    for path in event_files(run_dir):
        path.unlink()


def _check_run_dir(run_dir: Path, cfg: RunConfig) -> None:
    """Refuse a run directory that holds a run of another config (``--fresh`` wiped it before)."""
    cfg_path = run_dir / "config.json"
    if cfg_path.is_file():
        try:
            old = json.loads(cfg_path.read_text())
        except json.JSONDecodeError:
            old = None
        new = cfg.to_dict()
        # the same run at another path (a clone, a moved sweep) differs only in machine paths:
        # accepted, and config.json is rewritten with this machine's paths
        # (fields that only decide whether a run stops may differ, or be missing in older runs)
        if old != new and not (isinstance(old, dict) and
                               without_operational(hash_form(old)) == without_operational(hash_form(new))):
            diff = sorted(_diff_keys(old, new)) if isinstance(old, dict) else ["config.json (unreadable)"]
            raise UserError(f"{run_dir} holds a run with a different config (differs in "
                            f"{', '.join(diff[:6])}{' ...' if len(diff) > 6 else ''}); choose another --out "
                            f"or pass --fresh to delete that run and start anew")
    ddp.barrier()


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in set(a) | set(b):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


class Trainer:
    """The state of one run in one process: :meth:`fit` trains (resumed), :meth:`test` writes final.json."""

    def __init__(self, cfg: RunConfig, run_dir: Path, *, info: ddp.DistInfo, device: torch.device,
                 stop_event: threading.Event | None) -> None:
        self.info, self.device, self.run_dir = info, device, run_dir
        self.stop_event = stop_event
        torch.manual_seed(runtime.derive_seed(cfg.seed, "init"))
        self.train_set = runtime.build_dataset(cfg, "train")
        self.cfg = cfg = runtime.resolve_config(cfg, self.train_set)
        self.task = task_for(cfg)
        _check_run_dir(run_dir, cfg)
        if info.is_main:
            atomic_write_json(run_dir / "config.json", cfg.to_dict())
        # the same initial weights on every rank (DDP also broadcasts rank 0's at wrap time)
        torch.manual_seed(runtime.derive_seed(cfg.seed, "model"))
        model = runtime.build_model(cfg).to(device)
        if device.type == "cuda":
            runtime.to_channels_last(model)
        # transfer (model.init_from, model.freeze) before the optimiser sees the params
        self.init_source = apply_transfer(model, cfg, run_dir, is_main=info.is_main)
        self.model = model
        if info.world_size > 1:
            # every parameter takes part in every step (dropped laterals and heads are multiplied by
            # zero, idle AVS projections tied in with a zero), so DDP need not search the graph
            self.model = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=False)
        self.optimizer = build_optimizer(model, cfg.solver)
        self.balancer = build_balancer(cfg.model, model, seed=cfg.seed)  # model.balance acting on gradients
        # bf16 needs no loss scaling; the scaler is kept (disabled) so fp16 could be added later
        self.scaler = torch.amp.GradScaler("cuda", enabled=False)
        # solver.accumulate k: this process computes the shares of k processes in a group k times
        # as large, micro-batch j being virtual rank rank * k + j's (data order, seeds, negatives)
        k = cfg.solver.accumulate
        self.virtual_ranks = [info.rank * k + j for j in range(k)]
        self.virtual_world = info.world_size * k
        self.steps_per_epoch = len(self._loader(epoch=0, start_batch=0))
        self.schedule = build_schedule(cfg.solver, steps_per_epoch=self.steps_per_epoch,
                                       world_size=self.virtual_world)
        self.total_steps = cfg.solver.epochs * self.steps_per_epoch
        self.epoch = self.step = self.batch_in_epoch = 0
        self.meter = EpochMeter()
        self._new_interval()  # the steps since the last TensorBoard write
        self.events = EventLog(run_dir, enabled=False)  # opened by fit(), once the resumed step is known
        self.history: list[dict[str, Any]] = []
        self.wall_time_s = 0.0  # summed over all sessions of this run
        self.precise_bn_done = False
        self.gblend: dict[str, Any] | None = None  # offline G-Blend's estimate, once made
        self._eval_sets: dict[str, Any] = {}
        self._resume()

    # --- data ---------------------------------------------------------------------------
    def _loader(self, *, epoch: int, start_batch: int):
        """The epoch's batches from `start_batch` on: a batch per step, or with solver.accumulate
        k > 1 a list of k micro-batches per step (one loader per virtual rank, in lockstep)."""
        loaders = []
        for rank in self.virtual_ranks:
            # the loader's own randomness comes from (seed, epoch); seeding here keeps it off the
            # state left by the previous step
            torch.manual_seed(runtime.derive_seed(self.cfg.seed, "loader", epoch, rank))
            loaders.append(runtime.build_loader(self.train_set, batch_size=self.cfg.solver.batch_size,
                                                num_workers=self.cfg.data.num_workers, shuffle=True,
                                                seed=self.cfg.seed, epoch=epoch, rank=rank,
                                                world_size=self.virtual_world, drop_last=True,
                                                start_batch=start_batch))
        return loaders[0] if len(loaders) == 1 else _Lockstep(loaders)

    # --- checkpoints --------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {"model": _unwrap(self.model).state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(), "schedule": {"step": self.step, "lr": self.schedule(self.step)},
                "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                "data_order": {"seed": self.cfg.seed, "epoch": self.epoch, "start_batch": self.batch_in_epoch,
                               "world_size": self.info.world_size},
                "meter": vars(self.meter).copy(), "history": list(self.history),
                "wall_time_s": self.wall_time_s + (time.perf_counter() - self._t_session),
                "precise_bn_done": self.precise_bn_done, "rng": capture_rng_state(),
                "config_hash": self.cfg.config_hash(),
                **({"gblend": self.gblend} if self.gblend is not None else {})}

    def _save(self) -> None:
        if self.info.is_main:
            path = save_checkpoint(self._state(), ckpt_dir=self.run_dir / "checkpoints",
                                   keep=self.cfg.keep_checkpoints)
            log.info("checkpoint %s (epoch %d, step %d)", path.name, self.epoch, self.step)
        ddp.barrier()

    def _resume(self) -> None:
        self._t_session = time.perf_counter()
        found = load_latest(self.run_dir / "checkpoints") if self.info.is_main else None
        path = ddp.broadcast_object(str(found[1]) if found else None)
        if path is None:
            return
        # other ranks load the very file rank 0 chose
        state = found[0] if found else load_checkpoint(path)
        if state["data_order"]["world_size"] != self.info.world_size:
            raise UserError(f"{path} was written by {state['data_order']['world_size']} processes and this run "
                            f"has {self.info.world_size}; resume with the same number or pass --fresh")
        _unwrap(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch, self.batch_in_epoch = int(state["step"]), int(state["epoch"]), int(state["batch_in_epoch"])
        self.meter = EpochMeter(**state["meter"])
        self.history = list(state["history"])
        self.wall_time_s = float(state["wall_time_s"])
        self.precise_bn_done = bool(state["precise_bn_done"])
        self.gblend = state.get("gblend")
        if self.gblend is not None:
            self.task.gblend_weights = tuple(self.gblend["weights"][k] for k in GBLEND_HEADS)
        restore_rng_state(state["rng"])
        if self.info.is_main:  # metrics.jsonl follows the checkpoint: lines after it are dropped
            write_jsonl(self.run_dir / "metrics.jsonl", self.history)
        log.info("resumed from %s (epoch %d, step %d)", path, self.epoch, self.step)

    def _new_interval(self) -> None:
        self.interval, self.interval_dropped, self.interval_start = EpochMeter(), 0, time.perf_counter()

    # --- one step -----------------------------------------------------------------------
    def _drop_audio(self) -> bool:
        """The DropPathway draw of this step: the same on every rank and after a resume."""
        g = torch.Generator().manual_seed(runtime.derive_seed(self.cfg.seed, "droppathway", self.step))
        return draw_droppathway(self.cfg.model, generator=g)

    def _train_step(self, batch: dict[str, Any] | list[dict[str, Any]], *,
                    drop_audio: bool | None = None) -> tuple[float, dict[str, Any]]:
        """One optimiser step on a batch, or on solver.accumulate micro-batches (a list): each
        micro-batch's loss / k backpropagated (DDP syncs on the last only), then one step.
        `drop_audio`: this step's DropPathway decision, instead of the step's draw."""
        cfg = self.cfg
        lr = self.schedule(self.step)
        set_lr(self.optimizer, lr)
        micro = batch if isinstance(batch, list) else [batch]
        dropped = self._drop_audio() if drop_audio is None else drop_audio
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum, clips_sum = 0.0, 0
        for j, (rank, part) in enumerate(zip(self.virtual_ranks, micro)):
            # dropout and anything else drawing from torch's RNG: a function of (seed, step, rank)
            torch.manual_seed(runtime.derive_seed(cfg.seed, "step", self.step, rank))
            part = self.task.prepare_batch(part, device=self.device, step=self.step, rank=rank)
            last = j == len(micro) - 1
            sync = contextlib.nullcontext() if last or self.info.world_size == 1 else self.model.no_sync()
            with sync:
                with runtime.autocast(self.device, bf16=cfg.bf16):
                    outputs = self.model(part, drop_audio=dropped)
                if len(micro) > 1 and j == 0:
                    kept = {name: b.detach().clone() for name, b in _unwrap(self.model).named_buffers()}
                task = self.task.loss(outputs, part)
                if self.balancer is not None:
                    self.balancer.add(outputs, part["label"])
                loss = task.loss
                avs = outputs.get("avs_loss")  # any task's AVSlowFast with AVS on
                if avs is not None:
                    loss = loss + avs.float()
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"the loss is {loss.item()} at step {self.step}; lower solver.base_lr")
                (loss if len(micro) == 1 else loss / len(micro)).backward()
            if len(micro) > 1 and j > 0:
                # BN running statistics follow the first share only, as DDP keeps rank 0's
                # (broadcast_buffers), so weights and statistics both equal the DDP run's; put back
                # after backward, which reads the buffers the forward was given
                with torch.no_grad():
                    for name, b in _unwrap(self.model).named_buffers():
                        b.copy_(kept[name])
            stages = {k: float(v.detach()) for k, v in outputs.items() if k.startswith("avs_loss/")}
            stages.update(task.logs)  # step means in the epoch line, as train_<name>
            clips = _batch_clips(part)
            loss_value = float(loss.detach())
            task_value, avs_value = float(task.loss.detach()), None if avs is None else float(avs.detach())
            for meter in (self.meter, self.interval):  # a micro-batch counts as a step of its virtual rank
                meter.add(clips=clips, loss=loss_value, task=task_value, avs=avs_value, stages=stages, hits=task.hits)
            loss_sum, clips_sum = loss_sum + loss_value, clips_sum + clips
        if self.balancer is not None:
            logs = self.balancer.apply(epoch=self.epoch, step=self.step, clips=clips_sum * self.info.world_size)
            for meter in (self.meter, self.interval):
                meter.add_step_logs(logs, micro_batches=len(micro))
        self.optimizer.step()
        self.interval_dropped += int(dropped) * len(micro)
        return lr, {"loss": loss_sum / len(micro), "clips": clips_sum}

    # --- the loop -----------------------------------------------------------------------
    def _stop_requested(self) -> bool:
        flag = _STOP.is_set() or (self.stop_event is not None and self.stop_event.is_set())
        return ddp.any_true(flag, device=self.device)

    def _end_epoch(self, *, lr: float, epoch_time: float) -> None:
        cfg = self.cfg
        self.epoch += 1
        self.batch_in_epoch = 0
        record: dict[str, Any] = {"kind": "epoch", "epoch": self.epoch, "step": self.step, "lr": lr}
        record.update({k: round(v, 8) for k, v in self.meter.summary().items()})
        local = torch.tensor([self.meter.clips], dtype=torch.float64)
        clips = int(ddp.all_reduce_sum(local.to(self.device)).item())
        record["clips_per_s"] = round(clips / max(epoch_time, 1e-9), 3)
        record.update(self.meter.timing())
        if cfg.eval_every > 0 and (self.epoch % cfg.eval_every == 0 or self.epoch == cfg.solver.epochs):
            record.update(self.task.headline(self._evaluate("val"), prefix="val"))
        record["wall_time_s"] = round(self.wall_time_s + time.perf_counter() - self._t_session, 3)
        record["peak_mem_mb"] = round(runtime.peak_memory_mb(self.device), 1)
        self.history.append(record)
        self.meter = EpochMeter()
        self.events.scalars({k: v for k, v in record.items() if k not in ("kind", "epoch", "step")},
                            step=self.step, prefix="epoch/")
        self.events.flush()
        self._save()
        if self.info.is_main:
            write_jsonl(self.run_dir / "metrics.jsonl", self.history)
            log.info("epoch %d: %s", self.epoch, ", ".join(f"{k} {v}" for k, v in record.items()
                                                            if k not in ("kind", "epoch")))

    def _estimate_gblend(self) -> dict[str, Any]:
        """Offline Gradient-Blending (Wang et al. 2020; :mod:`avsf.engine.balance`): train each
        head alone from the initial weights for the window, measure its train and held-out loss
        before and after, put back the initial weights, optimiser and random state, and return
        the weights (also written to gblend.json). A run stopped in here estimates again."""
        cfg = self.cfg
        window = cfg.model.gblend_window_epochs or cfg.solver.epochs
        model = _unwrap(self.model)
        initial = copy.deepcopy(model.state_dict())
        optimizer, rng = copy.deepcopy(self.optimizer.state_dict()), capture_rng_state()
        if "val" not in self._eval_sets:
            self._eval_sets["val"] = runtime.build_dataset(cfg, "val")
        held_out = self._eval_sets["val"]
        # T: as many training videos as V holds, spread over the split (every class)
        train_part = runtime.build_dataset(cfg.with_overrides({"data.limit_videos": held_out.num_videos}), "train")

        def losses() -> dict[str, dict[str, float]]:
            ddp.broadcast_buffers(model)  # every rank scores with rank 0's BN statistics, as one process would
            return {split: self.task.head_losses(model, ds, device=self.device, rank=self.info.rank,
                                                 world_size=self.info.world_size)
                    for split, ds in (("train", train_part), ("val", held_out))}

        start, end = losses(), {}
        for i, head in enumerate(GBLEND_HEADS):
            model.load_state_dict(initial)
            self.optimizer.load_state_dict(optimizer)
            restore_rng_state(rng)
            self.task.gblend_weights = tuple(float(j == i) for j in range(len(GBLEND_HEADS)))
            for epoch in range(window):
                self.train_set.set_epoch(epoch, cfg.solver.epochs)
                self.model.train()
                self.step = epoch * self.steps_per_epoch
                for batch in self._loader(epoch=epoch, start_batch=0):
                    # the visual head's window: audio laterals dropped, the visual pathways alone
                    self._train_step(batch, drop_audio=True if head == "visual" else None)
                    self.step += 1
            after = losses()
            end[head] = {split: after[split][head] for split in after}
            log.info("G-Blend window of the %s head: %s -> %s", head,
                     {split: round(start[split][head], 4) for split in start}, end[head])
        model.load_state_dict(initial)
        self.optimizer.load_state_dict(optimizer)
        restore_rng_state(rng)
        self.step = 0
        self.meter = EpochMeter()
        self._new_interval()
        try:
            weights = gblend_weights(train_start=start["train"], val_start=start["val"],
                                     train_end={k: end[k]["train"] for k in GBLEND_HEADS},
                                     val_end={k: end[k]["val"] for k in GBLEND_HEADS})
        except ValueError as e:
            raise UserError(f"{e} (model.gblend_window_epochs={cfg.model.gblend_window_epochs}), or give "
                            "model.gblend_weights") from None
        self.task.gblend_weights = tuple(weights[k] for k in GBLEND_HEADS)
        record = {"weights": weights, "window_epochs": window, "start": start,
                  "end": {split: {k: end[k][split] for k in GBLEND_HEADS} for split in ("train", "val")},
                  "held_out": "val", "train_videos": train_part.num_videos}
        if self.info.is_main:
            atomic_write_json(self.run_dir / "gblend.json", record)
        log.info("G-Blend weights (visual, audio, fused): %s", [round(w, 4) for w in self.task.gblend_weights])
        return record

    def _evaluate(self, split: str) -> dict[str, Any]:
        """The task's metrics of the current weights on `split` (its dataset built once)."""
        if split not in self._eval_sets:
            self._eval_sets[split] = runtime.build_dataset(self.cfg, split)
        return self.task.evaluate(_unwrap(self.model), self._eval_sets[split], device=self.device,
                                  rank=self.info.rank, world_size=self.info.world_size)

    def fit(self) -> bool:
        """Train to the last epoch; False if a stop was requested (a checkpoint was written)."""
        cfg = self.cfg
        progress = runtime.Progress(total=self.total_steps, initial=self.step, log_every=cfg.log_every,
                                    enabled=self.info.is_main, desc=cfg.name)
        # a resumed run purges the events after its checkpoint's step, as metrics.jsonl drops its lines
        self.events = EventLog(self.run_dir, enabled=cfg.tensorboard and self.info.is_main,
                               purge_step=self.step + 1 if self.step else None)
        self._new_interval()
        if cfg.model.balance == "gblend" and not cfg.model.gblend_weights and self.gblend is None:
            self.gblend = self._estimate_gblend()
        lr = self.schedule(self.step)
        try:
            while self.epoch < cfg.solver.epochs:
                self.train_set.set_epoch(self.epoch, cfg.solver.epochs)
                self.model.train()
                t_epoch = time.perf_counter()
                if self.batch_in_epoch < self.steps_per_epoch:
                    start = self.batch_in_epoch
                    loader = self._loader(epoch=self.epoch, start_batch=start)
                    t_wait = time.perf_counter()
                    for batch in loader:
                        t0 = time.perf_counter()
                        self.meter.data_wait_s += t0 - t_wait
                        micro = batch if isinstance(batch, list) else [batch]
                        # per batch: a resumed epoch keeps it
                        self.meter.silent_clips += sum(count_silent(b) for b in micro)
                        self._check_data_present(loader, delivered=(self.batch_in_epoch - start + 1)
                                                 * cfg.solver.batch_size * len(micro))
                        try:
                            lr, out = self._train_step(batch)
                        except Exception as e:
                            if not is_out_of_memory(e):
                                raise
                            raise OutOfMemory(out_of_memory_reason(cfg, device=self.device, step=self.step,
                                                                   clips=_batch_clips(micro[0]))) from e
                        self.meter.train_time_s += time.perf_counter() - t0
                        self.step += 1
                        self.batch_in_epoch += 1
                        progress.update(step=self.step, epoch=self.epoch, loss=out["loss"], lr=lr, clips=out["clips"])
                        if cfg.log_every > 0 and self.step % cfg.log_every == 0:
                            self.events.scalars(interval_scalars(self.interval, dropped=self.interval_dropped, lr=lr,
                                                                 seconds=time.perf_counter() - self.interval_start),
                                                step=self.step)
                            self._new_interval()
                        last_of_epoch = self.batch_in_epoch >= self.steps_per_epoch
                        if self._stop_requested():
                            self._save()
                            log.info("stop requested: checkpointed at step %d", self.step)
                            return False
                        if cfg.checkpoint_every > 0 and self.step % cfg.checkpoint_every == 0 and not last_of_epoch:
                            self._save()
                        if last_of_epoch:
                            break
                        t_wait = time.perf_counter()
                    self.meter.data_failures += len(getattr(loader, "failures", ())) + len(getattr(loader, "crashes", ()))
                self._end_epoch(lr=lr, epoch_time=time.perf_counter() - t_epoch)
        finally:
            progress.close()
        if cfg.solver.precise_bn and not self.precise_bn_done:
            self._precise_bn()
        return True

    def _check_data_present(self, loader: Any, *, delivered: int) -> None:
        """Stop once more than data.max_failed_fraction of this pass's clip reads failed (each
        failed read was replaced, so the model would train on what is left without a word)."""
        failed = list(getattr(loader, "failures", ())) + list(getattr(loader, "crashes", ()))
        reads = delivered + len(failed)
        limit = self.cfg.data.max_failed_fraction
        over = reads >= DATA_GONE_MIN_READS and len(failed) > limit * reads
        if not ddp.any_true(over, device=self.device):  # every rank stops together, or none does
            return
        if not over:
            raise DataGoneError(f"another process of this run found most of its clip reads failing in epoch "
                                f"{self.epoch + 1} (see rank 0's log); check that the dataset is mounted")
        ckpts = list_checkpoints(self.run_dir / "checkpoints")
        raise DataGoneError(
            f"{len(failed)} of {reads} clip reads failed in epoch {self.epoch + 1} ({100 * len(failed) / reads:.0f}% > "
            f"data.max_failed_fraction={limit:g}): the data seems to have gone away (first: {failed[0]}; "
            f"last: {failed[-1]}). Check that the dataset is mounted and readable, then run again: it resumes "
            f"from {ckpts[-1].name if ckpts else 'the start (no checkpoint yet)'}")

    def _precise_bn(self) -> None:
        """Recompute BN running statistics over clean training batches (averaged over ranks)."""
        n = self.cfg.solver.precise_bn_batches
        torch.manual_seed(runtime.derive_seed(self.cfg.seed, "precise_bn", self.info.rank))
        loader = self._loader(epoch=self.cfg.solver.epochs, start_batch=0)
        with runtime.autocast(self.device, bf16=self.cfg.bf16):
            used = update_bn_stats(_unwrap(self.model), loader, num_batches=n,
                                   prepare=lambda b: runtime.batch_to_device(b, self.cfg, self.device))
        log.info("precise BN: statistics from %d batches", used)
        self.precise_bn_done = True
        self._save()

    def test(self) -> dict[str, Any]:
        """The task's final metrics (on its final split: test, or val for pretraining) into
        final.json and a last ``"kind": "test"`` line of metrics.jsonl."""
        t0 = time.perf_counter()
        split = self.task.final_split
        last = self.history[-1] if self.history else {}
        metrics = None
        if last.get("epoch") == self.epoch and not self.cfg.solver.precise_bn:
            # the last epoch was just evaluated on this split with these very weights: the same numbers
            metrics = self.task.metrics_from_headline(last, prefix=split)
        if metrics is None:
            metrics = self._evaluate(split)
        final: dict[str, Any] = {}
        if self.info.is_main:
            final = write_final(self.run_dir, self.cfg, metrics, split=split, **self.task.final_fields(),
                                step=self.step, epochs=self.epoch, train_wall_time_s=last.get("wall_time_s"),
                                test_wall_time_s=round(time.perf_counter() - t0, 3),
                                world_size=self.info.world_size, device=str(self.device.type),
                                **({"init_from": self.init_source} if self.init_source else {}))
            line = self.task.headline(metrics, prefix=split)
            # the test line names its split when it is not the test split
            test_line = {"kind": "test", **({"split": split} if split != "test" else {}), "epoch": self.epoch,
                         "step": self.step, **line}
            write_jsonl(self.run_dir / "metrics.jsonl", self.history + [test_line])
            log.info("%s: %s", split, ", ".join(f"{k} {v:.4g}" for k, v in line.items()))
            self.events.scalars({k.removeprefix(f"{split}_"): v for k, v in line.items()}, step=self.step,
                                prefix=f"{split}/")
        self.events.close()
        return ddp.broadcast_object(final)


def train(cfg: RunConfig, run_dir: str | Path, *, fresh: bool = False,
          stop_event: threading.Event | None = None) -> dict[str, Any]:
    """Train `cfg` in `run_dir` (resuming from its newest valid checkpoint), test it, write
    ``final.json`` and return its contents.

    A finished run (final.json present, same config) is not redone: its final.json is returned.
    ``fresh=True`` deletes what `run_dir` holds and starts anew. When a stop is requested
    (``stop_event`` set or :func:`request_stop`), a checkpoint is written and
    ``{"status": "stopped", "step": ..., "epoch": ...}`` is returned instead.
    """
    run_dir = Path(run_dir)
    _STOP.clear()
    device = runtime.resolve_device(cfg.device)
    with ddp.process_group(use_cuda=device.type == "cuda") as info:
        device = runtime.resolve_device(cfg.device)  # again: joining the group set this rank's GPU
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick its fastest kernels
        if fresh and info.is_main:
            _wipe_run_dir(run_dir)
        ddp.barrier()
        return _train_in_group(cfg, run_dir, info=info, device=device, stop_event=stop_event)


def _train_in_group(cfg: RunConfig, run_dir: Path, *, info: ddp.DistInfo, device: torch.device,
                    stop_event: threading.Event | None) -> dict[str, Any]:
    final_path = run_dir / "final.json"
    prev_det = torch.are_deterministic_algorithms_enabled()
    with runtime.run_logging(run_dir / "log.txt" if info.is_main else None), \
            runtime.cpu_threads(device=device, num_workers=cfg.data.num_workers) as threads:
        if device.type == "cpu":  # the kill/resume guarantee is bit-exact on the CPU
            torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            trainer = Trainer(cfg, run_dir, info=info, device=device, stop_event=stop_event)
            if final_path.is_file() and trainer.epoch >= trainer.cfg.solver.epochs:
                return json.loads(final_path.read_text())
            log.info("training %s: %d epochs x %d steps, %d process(es), lr %.4g peak, %s (%d threads)",
                     trainer.cfg.name, trainer.cfg.solver.epochs, trainer.steps_per_epoch, info.world_size,
                     trainer.schedule.peak, device, threads)
            try:
                if not trainer.fit():
                    return {"status": "stopped", "step": trainer.step, "epoch": trainer.epoch}
                return trainer.test()
            finally:
                trainer.events.close()
        finally:
            torch.use_deterministic_algorithms(prev_det)
