"""The training and test loader: deterministic, sharded, resumable, and hard to kill.

Order: a permutation drawn from (seed, epoch), padded or trimmed to a multiple of the world
size, sharded by rank, cut into batches; `start_batch` skips the batches a resumed run has
already trained on. Each sample's own randomness comes from (seed, epoch, index), so a batch
is the same whichever worker makes it and however often the loader restarts.

Bad files cost one sample, not the run:
- a file that raises while decoding is replaced inside the dataset (policy "replace"; listed
  in `loader.failures`) or raises (policy "strict");
- a clip from a file with an audio stream whose audio came out fully padded (the stream
  yields no samples at the clip's time: unseekable past repair, undecodable, empty, or
  shorter than the video) is counted in `loader.silent_clips`; under "strict" the dataset
  raises on it instead, since training on silence looks like nothing is wrong;
- a file that kills a worker process (an FFmpeg segfault, abort) or hangs it longer than
  `data.decode_timeout_s` (a watchdog thread kills that worker) is found from a small shared
  table in which every worker notes the item and file it is decoding. The file is then
  blocked in the dataset (skipped from now on, in this and later epochs), the crash is
  listed in `loader.crashes`, and a fresh set of workers resumes at the first batch not yet
  delivered, so no batch is lost or repeated.

PyTorch's SIGCHLD handler would raise the worker-death error inside whatever the main thread
is running (e.g. the training step), where nobody can catch it; the loader unregisters its
workers from that handler and detects deaths itself while waiting for a batch.

`num_workers = 0` decodes in the main process: errors are still replaced, but a segfault
there ends the process; use workers for datasets that may hold such files.
"""

from __future__ import annotations

import faulthandler
import functools
import logging
import math
import os
import re
import signal
import threading
import time
from multiprocessing.sharedctypes import RawArray
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate, get_worker_info

from avsf.errors import USER_ERRORS
from avsf.data.decode import DecodeError

log = logging.getLogger("avsf.data")
_SLOT = 4  # per worker: item + 1, pid, start time (ms, monotonic), video + 1 (0 = idle)
_DEATH_CHECK_S = 0.5  # how often a waiting loader checks for dead workers
MAX_RESTARTS = 20  # worker deaths tolerated per pass before giving up (something else is wrong)


def batch_plan(*, num_items: int, batch_size: int, shuffle: bool, seed: int, epoch: int, rank: int,
               world_size: int, drop_last: bool) -> list[list[int]]:
    """The batches (lists of item indices) this rank sees in this epoch."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be at least 1")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world size {world_size}")
    if shuffle:
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, 0xD47A])))
        order = rng.permutation(num_items).tolist()
    else:
        order = list(range(num_items))
    if world_size > 1:
        if drop_last:
            order = order[:(num_items // world_size) * world_size]
        else:  # pad with the first items so every rank has as many (as DistributedSampler does)
            total = math.ceil(num_items / world_size) * world_size
            order = (order * math.ceil(total / max(1, num_items)))[:total]
        order = order[rank::world_size]
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    return batches


def collate(samples: list[dict[str, Any]], *,
            stack: Callable[[list[dict[str, Any]]], dict[str, Any]] = default_collate) -> dict[str, Any]:
    """Stack samples into a batch with ``stack``, the dataset's own collate (``dataset.collate``:
    AVA's pads frames and concatenates boxes); the replaced files travel under "_failures" (a list).

    Easy AVS negatives (``audio_neg_hard`` False) get the audio of the next sample in the
    batch that is from another video and has sound; with none, they stay zeros (silent
    negatives take no part in the AVS loss).
    """
    failures = [f for s in samples for f in s.pop("_failures", [])]
    batch = stack(samples)
    batch["_failures"] = failures
    if "audio_neg" in batch:
        fill_easy_negatives(batch)
    return batch


def count_silent(batch: dict[str, Any]) -> int:
    """Clips of a batch that carry audio but whose file's audio stream gave none of it."""
    if "audio" not in batch or "audio_pad" not in batch or "has_audio" not in batch:
        return 0
    has_audio = torch.as_tensor(batch["has_audio"], dtype=torch.bool)
    return int((has_audio & (torch.as_tensor(batch["audio_pad"]) >= 1.0)).sum())


def fill_easy_negatives(batch: dict[str, Any]) -> None:
    """In place: audio_neg[i] = audio[j] for easy negatives, j the next other-video sample."""
    n = batch["audio"].shape[0]
    videos = batch["video_index"].tolist()
    has_audio = batch["has_audio"].tolist()
    hard = batch["audio_neg_hard"].tolist()
    for i in range(n):
        if hard[i]:
            continue
        for k in range(1, n):
            j = (i + k) % n
            if videos[j] != videos[i] and has_audio[j]:
                batch["audio_neg"][i] = batch["audio"][j]
                break


class _Tracked(Dataset):
    """Wraps the dataset in a worker: notes in shared memory which item and which file the
    worker is decoding, so the main process can name the file that killed or hung it."""

    def __init__(self, dataset: Dataset, slots: Any):
        self.dataset = dataset
        self.slots = slots

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def _base(self) -> int:
        info = get_worker_info()
        return _SLOT * (info.id if info is not None else 0)

    def __getitem__(self, index: int) -> dict[str, Any]:
        base = self._base()
        slots = self.slots

        def on_decode(video: int) -> None:  # called by the dataset before each file it opens
            slots[base + 2] = time.monotonic_ns() // 1_000_000
            slots[base + 3] = video + 1

        slots[base + 1] = os.getpid()
        slots[base + 2] = time.monotonic_ns() // 1_000_000
        slots[base + 0] = index + 1
        if hasattr(self.dataset, "on_decode"):
            self.dataset.on_decode = on_decode
        try:
            return self.dataset[index]
        finally:
            slots[base + 0] = 0
            slots[base + 3] = 0


def _worker_init(_worker_id: int) -> None:
    # one thread per worker for torch and FFmpeg: parallelism comes from the workers
    torch.set_num_threads(1)
    faulthandler.disable()  # a decoder crash is reported by the main process, not dumped here


class SampleLoader:
    """Iterates over batches (dicts of tensors) of one epoch; see the module docstring."""

    def __init__(self, dataset: Dataset, *, batch_size: int, num_workers: int, shuffle: bool, seed: int,
                 epoch: int, rank: int = 0, world_size: int = 1, drop_last: bool, start_batch: int = 0,
                 timeout_s: float | None = None, strict: bool | None = None):
        self.dataset = dataset
        self.stack = getattr(dataset, "collate", default_collate)  # a dataset may carry its own
        self.batch_size = batch_size
        self.num_workers = max(0, int(num_workers))
        self.batches = batch_plan(num_items=len(dataset), batch_size=batch_size, shuffle=shuffle, seed=seed,  # type: ignore[arg-type]
                                  epoch=epoch, rank=rank, world_size=world_size, drop_last=drop_last)
        if start_batch < 0 or start_batch > len(self.batches):
            raise ValueError(f"start_batch={start_batch} is outside this epoch's {len(self.batches)} batches")
        self.start_batch = start_batch
        cfg = getattr(dataset, "cfg", None)
        self.timeout_s = timeout_s if timeout_s is not None else (cfg.data.decode_timeout_s if cfg else 60.0)
        self.strict = strict if strict is not None else bool(cfg and cfg.data.decode_failure == "strict")
        self.failures: list[str] = []  # "path: reason" of every file replaced in a sample
        self.silent_clips = 0  # clips whose file has an audio stream but whose audio is all padding
        self.crashes: list[str] = []  # "path: reason" of every file that killed or hung a worker
        self.restarts = 0

    def __len__(self) -> int:
        return len(self.batches) - self.start_batch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        pos = self.start_batch
        if self.num_workers == 0:
            for batch_items in self.batches[pos:]:
                yield self._take(collate([self.dataset[i] for i in batch_items], stack=self.stack))
            return
        while pos < len(self.batches):
            slots = RawArray("q", _SLOT * self.num_workers)
            killed: dict[int, str] = {}  # worker id -> why the watchdog killed it
            loader = DataLoader(_Tracked(self.dataset, slots), batch_sampler=self.batches[pos:],
                                num_workers=self.num_workers, collate_fn=functools.partial(collate, stack=self.stack),
                                worker_init_fn=_worker_init, persistent_workers=False, prefetch_factor=2)
            it = iter(loader)
            _unregister_sigchld(it)
            stop = threading.Event()
            watchdog = threading.Thread(target=self._watch, args=(slots, killed, stop), daemon=True)
            watchdog.start()
            try:
                for batch in it:
                    pos += 1
                    yield self._take(batch)
                return
            except USER_ERRORS as e:
                raise _unwrapped(e) from e
            except RuntimeError as e:
                if not _is_worker_death(e):
                    raise
                self._recover(it, slots, killed, e)
            finally:
                stop.set()
                watchdog.join()
                it._shutdown_workers() if hasattr(it, "_shutdown_workers") else None
            self.restarts += 1
            if self.restarts > MAX_RESTARTS:
                raise RuntimeError(f"loader workers died {self.restarts} times in one pass; last: {self.crashes[-1]}")

    def _take(self, batch: dict[str, Any]) -> dict[str, Any]:
        failures = batch.pop("_failures", [])
        for f in failures:
            log.warning("replaced a sample: %s", f)
        self.failures.extend(failures)
        self.silent_clips += count_silent(batch)
        return batch

    def _watch(self, slots: Any, killed: dict[int, str], stop: threading.Event) -> None:
        """Kill a worker stuck on one file longer than the timeout (a decoder hang)."""
        limit_ms = self.timeout_s * 1000
        while not stop.wait(min(1.0, self.timeout_s / 4)):
            now = time.monotonic_ns() // 1_000_000
            for w in range(self.num_workers):
                base = _SLOT * w
                if slots[base] and now - slots[base + 2] > limit_ms and w not in killed:
                    killed[w] = f"decoding took longer than data.decode_timeout_s={self.timeout_s:g} s (hang)"
                    try:
                        os.kill(int(slots[base + 1]), signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass

    def _recover(self, it: Any, slots: Any, killed: dict[int, str], error: RuntimeError) -> None:
        """Block the file(s) that took worker(s) down, or re-raise if none can be named."""
        dead = _dead_workers(it, slots, self.num_workers, str(error))
        culprits = []
        for w in dead:
            base = _SLOT * w
            item, video = int(slots[base]) - 1, int(slots[base + 3]) - 1
            if item < 0:
                continue  # died between items: nothing to blame; the batch just reruns
            if video < 0:
                video = (self.dataset.video_of(item) if hasattr(self.dataset, "video_of")
                         else item // getattr(self.dataset, "views", 1))
            path = self.dataset.records[video].path if hasattr(self.dataset, "records") else f"item {item}"
            reason = killed.get(w) or f"the decoder killed its loader worker ({_exit_reason(it, w)})"
            culprits.append((video, path, reason))
        if not dead:
            raise error
        if not culprits:  # died between samples (e.g. killed for memory): nothing to block, rerun
            why = ", ".join(_exit_reason(it, w) for w in dead)
            log.warning("a loader worker died between samples (%s); restarting the workers", why)
            self.crashes.append(f"(no file): a loader worker died between samples ({why})")
        already = set(getattr(self.dataset, "blocked", ()))
        for video, path, reason in dict((c[0], c) for c in culprits).values():  # two workers, one file
            if video in already:
                raise RuntimeError(f"{path} took down a loader worker again after it was blocked ({reason}); "
                                   f"this is a bug in the loader") from error
            if self.strict:
                raise DecodeError(path, f"{reason} (data.decode_failure=strict)") from error
            log.warning("loader worker lost on %s: %s; the file is skipped from now on", path, reason)
            self.crashes.append(f"{path}: {reason}")
            if hasattr(self.dataset, "blocked"):
                self.dataset.blocked.add(video)


def _unregister_sigchld(it: Any) -> None:
    """Take the iterator's workers off PyTorch's SIGCHLD handler (see the module docstring),
    and make it check for dead workers every half second instead of every five."""
    if getattr(it, "_worker_pids_set", False):
        try:
            torch.utils.data._utils.signal_handling._remove_worker_pids(id(it))
            it._worker_pids_set = False
        except (RuntimeError, AttributeError):
            pass
    if hasattr(type(it), "_try_get_data"):
        it._try_get_data = functools.partial(type(it)._try_get_data, it, timeout=_DEATH_CHECK_S)


def _unwrapped(error: Exception) -> Exception:
    """A user-facing error a worker raised, as the worker raised it: PyTorch re-raises it in the
    main process with "Caught X in DataLoader worker process k" and the worker's traceback as
    its message, so the run's one-line reason would be that first line."""
    text = str(error)
    if not text.startswith("Caught "):
        return error
    prefix = f"{type(error).__name__}: "
    last = next((ln for ln in reversed(text.splitlines()) if ln.strip()), "")
    message = last.split(prefix, 1)[1] if prefix in last else last
    try:
        return type(error)(message)
    except TypeError:  # a constructor of other arguments: keep PyTorch's error
        return error


def _is_worker_death(error: RuntimeError) -> bool:
    text = str(error)
    return "DataLoader worker" in text and ("exited unexpectedly" in text or "killed by signal" in text)


def _dead_workers(it: Any, slots: Any, num_workers: int, message: str) -> list[int]:
    workers = getattr(it, "_workers", None)
    if workers:
        dead = [i for i, w in enumerate(workers) if w.exitcode not in (None, 0)]
        if dead:
            return dead
    match = re.search(r"pid(?:\(s\))? ([\d, ]+)", message)
    pids = {int(p) for p in re.findall(r"\d+", match.group(1))} if match else set()
    return [w for w in range(num_workers) if int(slots[_SLOT * w + 1]) in pids]


def _exit_reason(it: Any, worker: int) -> str:
    workers = getattr(it, "_workers", None)
    code = workers[worker].exitcode if workers else None
    if code is not None and code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def build_loader(dataset: Dataset, *, batch_size: int, num_workers: int, shuffle: bool, seed: int, epoch: int,
                 rank: int = 0, world_size: int = 1, drop_last: bool, start_batch: int = 0) -> SampleLoader:
    """A loader over `dataset` (docs/INTERFACES.md, "Data")."""
    if hasattr(dataset, "set_epoch") and hasattr(dataset, "total_epochs") and getattr(dataset, "epoch", epoch) != epoch:
        dataset.set_epoch(epoch, dataset.total_epochs)  # per-sample randomness follows the epoch
    return SampleLoader(dataset, batch_size=batch_size, num_workers=num_workers, shuffle=shuffle, seed=seed,
                        epoch=epoch, rank=rank, world_size=world_size, drop_last=drop_last, start_batch=start_batch)
