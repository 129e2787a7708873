"""Pieces of a run shared by training and evaluation: device choice, seeding, autocast,
memory format, moving batches, the model/data builders, logging and the progress display."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
from torch import Tensor, nn

from avsf.config import RunConfig
from avsf.console import in_notebook
from avsf.errors import UserError

log = logging.getLogger("avsf.engine")

VIDEO_KEYS = ("slow", "fast")


def resolve_device(name: str) -> torch.device:
    """"auto" picks CUDA when present; "cuda" without a GPU is a user error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda but no CUDA GPU is visible; use --set device=cpu (or auto)")
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


@contextlib.contextmanager
def cpu_threads(*, device: torch.device, num_workers: int) -> Iterator[int]:
    """On the CPU, leave one core per loader worker: torch's intra-op threads spin while they
    wait, and oversubscribed cores slow a step several-fold. GPU runs keep the default."""
    old = torch.get_num_threads()
    if device.type != "cpu":
        yield old
        return
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    n = max(1, min(old, cores - num_workers))
    keep_freed_memory()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(old)


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_MMAP_THRESHOLD_MAX = 32 << 20  # glibc's ceiling on 64-bit: larger blocks are always mmapped
_allocator_tuned = False


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed blocks of up to 32 MiB in the heap instead of handing
    them back to the kernel, once per process; True when that took effect (glibc only).

    Why: a training step on the CPU allocates and frees the same large activation and gradient
    buffers every step. By default glibc serves blocks above its (adaptive) mmap threshold with
    a fresh mmap and unmaps them on free, so every step page-faults its working set back in and
    the kernel zeroes each page: the R50 AVSlowFast step with AVS (batch 2, crop 128, 2 threads)
    took 2.10 s, 1.73 s with the heap kept. The values computed are unchanged; the resident
    size stays at the run's peak."""
    global _allocator_tuned
    if _allocator_tuned:
        return True
    try:
        import ctypes
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = all(mallopt(param, value) == 1 for param, value in ((_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX),
                                                             (_M_TRIM_THRESHOLD, 1 << 30),
                                                             (_M_TOP_PAD, 64 << 20)))
    _allocator_tuned = ok
    return ok


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from a tuple such as (seed, "step", step, rank): stable across runs."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def autocast(device: torch.device, *, bf16: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on GPU; exact fp32 (no autocast) on the CPU."""
    if device.type == "cuda" and bf16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_channels_last(model: nn.Module) -> nn.Module:
    """channels_last_3d for 5-D (video) weights and channels_last for 4-D (audio) ones: the
    memory formats cuDNN's fastest kernels want. Other tensors are left as they are."""
    for p in model.parameters():
        if p.dim() == 5:
            p.data = p.data.contiguous(memory_format=torch.channels_last_3d)
        elif p.dim() == 4:
            p.data = p.data.contiguous(memory_format=torch.channels_last)
    return model


def move_batch(batch: dict[str, Any], device: torch.device, *, mean: tuple[float, ...],
               std: tuple[float, ...]) -> dict[str, Any]:
    """Tensors to `device`; uint8 video (the loader's ``"slow"``/``"fast"``, [N,3,T,H,W]) is
    normalised there with (`mean`, `std`) (``cfg.data.mean``/``std``), so only uint8 crosses to
    the GPU. Video on GPU goes channels_last_3d. Float video is taken as already normalised."""
    from avsf.data.transforms import normalize_video

    out = {}
    for k, v in batch.items():
        if isinstance(v, Tensor):
            v = v.to(device, non_blocking=True)
            if k in VIDEO_KEYS and v.dtype == torch.uint8:
                v = normalize_video(v, mean=mean, std=std)
            if device.type == "cuda" and v.dim() == 5:
                v = v.contiguous(memory_format=torch.channels_last_3d)
        out[k] = v
    return out


def batch_to_device(batch: dict[str, Any], cfg: RunConfig, device: torch.device) -> dict[str, Any]:
    """:func:`move_batch` with the run's normalisation (``cfg.data.mean``, ``cfg.data.std``)."""
    return move_batch(batch, device, mean=tuple(cfg.data.mean), std=tuple(cfg.data.std))


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


# --- builders: the model and data parts live in other packages ------------------------
def resolve_config(cfg: RunConfig, train_set: Any) -> RunConfig:
    """A copy with what the dataset decides filled in: ``model.num_classes`` (0 in the smoke
    presets) and, for EPIC heads, the verb and noun counts when the dataset knows them."""
    cfg = RunConfig.from_dict(cfg.to_dict())
    if cfg.model.num_classes <= 0:
        cfg.model.num_classes = int(train_set.num_classes)
    for attr in ("num_verbs", "num_nouns"):
        if cfg.model.head == "epic" and getattr(train_set, attr, None):
            setattr(cfg.model, attr, int(getattr(train_set, attr)))
    return cfg


def build_model(cfg: RunConfig) -> nn.Module:
    from avsf.models import build_model as _build

    return _build(cfg.model)


def build_dataset(cfg: RunConfig, split: str) -> Any:
    from avsf.data import build_dataset as _build

    return _build(cfg, split)


def build_loader(dataset: Any, **kw: Any) -> Iterable:
    from avsf.data import build_loader as _build

    return _build(dataset, **kw)


# --- logging and progress -------------------------------------------------------------
@contextlib.contextmanager
def run_logging(log_path: Path | None) -> Iterator[None]:
    """INFO lines of the "avsf" loggers to `log_path` (appended) and, when no handler is set
    up yet, to stderr; both removed afterwards."""
    root = logging.getLogger("avsf")
    added: list[logging.Handler] = []
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(log_path)
        fh.setFormatter(fmt)
        added.append(fh)
    if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
               for h in root.handlers + logging.getLogger().handlers):
        sh = logging.StreamHandler(sys.stderr)
        sh.setFormatter(fmt)
        # a terminal has the step bar and a notebook the grid's bar: their console shows warnings only
        # (a kernel draws stderr as an error box); a log file gets every line
        sh.setLevel(logging.WARNING if sys.stderr.isatty() or in_notebook() else logging.INFO)
        added.append(sh)
    old_level = root.level
    root.setLevel(logging.INFO)
    for h in added:
        root.addHandler(h)
    try:
        yield
    finally:
        for h in added:
            root.removeHandler(h)
            h.close()
        root.setLevel(old_level)


class Progress:
    """A tqdm bar (loss, lr, clips/s) when stderr is a terminal; plain log lines every
    `log_every` steps otherwise. Log lines also go to the run's log.txt."""

    def __init__(self, *, total: int, initial: int, log_every: int, enabled: bool, desc: str) -> None:
        self.log_every = max(log_every, 1)
        self.enabled = enabled
        self.total = total
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, leave=False)
        self._t0 = time.perf_counter()
        self._clips = 0

    def update(self, *, step: int, epoch: int, loss: float, lr: float, clips: int) -> None:
        if not self.enabled:
            return
        self._clips += clips
        rate = self._clips / max(time.perf_counter() - self._t0, 1e-9)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.4g}", clips_s=f"{rate:.1f}", refresh=False)
            if step % self.log_every == 0:
                log.debug("step %d", step)
        if step % self.log_every == 0 or step == self.total:
            msg = f"epoch {epoch} step {step}/{self.total} loss {loss:.4f} lr {lr:.5g} clips/s {rate:.1f}"
            (log.debug if self.bar is not None else log.info)(msg)
            if self.bar is not None:  # keep the file log complete without printing over the bar
                for h in logging.getLogger("avsf").handlers:
                    if isinstance(h, logging.FileHandler):
                        h.emit(logging.LogRecord("avsf.engine", logging.INFO, "", 0, msg, None, None))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
