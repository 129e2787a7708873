"""Probe media files in guarded subprocesses (and cache the headers a dataset's statistics need).

FFmpeg can segfault or hang on some truncated or odd streams (PyAV issues #2344, #689,
#1962), where no try/except helps. Every probe here runs in a child process with a time
limit: a file that kills or hangs its prober is reported ("crashed", "timeout") and the
prober is restarted.

Two depths: "header" (open the file, read stream info: what dataset statistics need) and
"deep" (also decode the first frames of each stream and the last second of the file, which
finds truncated files and streams that do not decode). The datasets read headers through
:func:`header_probe_cached`; :mod:`avsf.data.check` scans a whole dataset with deep probes.
"""

from __future__ import annotations

import faulthandler
import hashlib
import json
import multiprocessing as mp
import os
import signal
import time
from dataclasses import asdict, dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, Iterable, Iterator

# what a probe can find, in report order
PROBLEMS = ("missing", "zero_length", "unreadable", "crashed", "timeout", "truncated", "no_video", "no_audio",
            "no_sound")
# where a deep probe decodes audio as clips would (fractions of the duration), and how long
SOUND_CHECK_AT = (0.1, 0.5, 0.9)
SOUND_CHECK_SPAN_S = 1.0
_TRUNCATION_SLACK_S = 0.5  # decoding may end this much before the header's duration


@dataclass
class ProbeResult:
    """One file's verdict. `status` is "ok" or one of missing, zero_length, unreadable,
    crashed, timeout. `info` is the header (MediaInfo as a dict) when the file opened."""

    path: str
    status: str
    reason: str = ""
    info: dict[str, Any] | None = None
    truncated: bool = False
    decoded_end_s: float | None = None
    no_sound: bool = False  # an audio stream that yields no samples at clip times
    sound_reason: str = ""

    @property
    def readable(self) -> bool:
        return self.status == "ok"

    def problems(self) -> list[str]:
        """Every problem category this file falls into (empty: a good audiovisual file)."""
        if self.status != "ok":
            return [self.status]
        out = []
        if self.truncated:
            out.append("truncated")
        if self.info and not self.info["has_video"]:
            out.append("no_video")
        if self.info and not self.info["has_audio"]:
            out.append("no_audio")
        if self.no_sound:
            out.append("no_sound")
        return out

    def reason_for(self, problem: str) -> str:
        if problem == "no_sound":
            return self.sound_reason
        return self.reason or problem.replace("_", " ")


def _decoded_end(container: Any, stream: Any, *, from_s: float) -> tuple[float | None, int]:
    """Seek to `from_s` and decode `stream` to the end: (last frame end time, frames)."""
    import av

    from avsf.data.decode import decode_tolerant, frame_time, origin_s, time_base_s

    origin = origin_s(container)
    try:
        container.seek(int(max(0.0, origin + from_s) / stream.time_base), stream=stream, backward=True)
    except av.FFmpegError:
        container.seek(0)
    end, count = None, 0
    for frame in decode_tolerant(container, stream, path="", what=stream.type):
        t = frame_time(frame, time_base_s(stream), origin)
        if t is not None:
            step = (frame.samples / frame.sample_rate) if stream.type == "audio" else 0.0
            end = max(end or 0.0, t + step)
        count += 1
    return end, count


def probe_file(path: str, *, deep: bool) -> ProbeResult:
    """Probe one file in this process (the guarded callers run this in a child)."""
    from avsf.data.decode import DecodeError, info_from_container, open_media

    p = Path(path)
    if not p.exists():
        return ProbeResult(path, "missing", "file not found")
    if p.is_file() and p.stat().st_size == 0:
        return ProbeResult(path, "zero_length", "zero-length file")
    try:
        container = open_media(path)
    except DecodeError as e:
        return ProbeResult(path, "unreadable", e.reason)
    try:
        info = info_from_container(container, path)
        result = ProbeResult(path, "ok", info=info.to_dict())
        if not deep:
            return result
        duration = info.duration_s
        ends = []
        for streams in (container.streams.video, container.streams.audio):
            if not streams:
                continue
            stream = streams[0]
            # the stream must decode from its start ...
            try:
                first_end, first_count = _decoded_end_head(container, stream)
            except DecodeError as e:
                if stream.type != "audio":
                    raise
                first_end, first_count, why = None, 0, f": {e.reason}"
            else:
                why = ""
            if first_count == 0 and stream.type == "audio":
                # the pictures are fine; a silent file is still worth its own status
                result.no_sound = True
                result.sound_reason = f"its audio stream decodes no frame from the start{why}"
                continue
            if first_count == 0:
                return ProbeResult(path, "unreadable", f"no {stream.type} frame decodes", info=info.to_dict())
            # ... and up to its end
            end, _ = _decoded_end(container, stream, from_s=max(0.0, duration - 1.0))
            ends.append(end if end is not None else first_end)
        if container.streams.audio and not result.no_sound:
            why = _sound_at_clip_times(container, path, duration)
            if why:
                result.no_sound, result.sound_reason = True, why
        result.decoded_end_s = max(e for e in ends if e is not None) if any(e is not None for e in ends) else None
        if duration > 0 and result.decoded_end_s is not None and \
                result.decoded_end_s < duration - max(_TRUNCATION_SLACK_S, 0.05 * duration):
            result.truncated = True
            result.reason = f"decodes to {result.decoded_end_s:.2f} s of the {duration:.2f} s its header states"
        return result
    except Exception as e:  # noqa: BLE001  (any decoder complaint makes the file unreadable)
        reason = e.reason if isinstance(e, DecodeError) else f"{type(e).__name__}: {e}"
        return ProbeResult(path, "unreadable", reason)
    finally:
        container.close()


def _sound_at_clip_times(container: Any, path: str, duration: float) -> str:
    """'' when the audio stream gives samples where clips would be cut (SOUND_CHECK_AT), else
    why not: the loader would train on silence there."""
    from avsf.data.decode import DecodeError, decode_audio_span

    errors = []
    for at in SOUND_CHECK_AT:
        start = max(0.0, at * duration - SOUND_CHECK_SPAN_S / 2)
        try:
            _, _, pad = decode_audio_span(container, start_s=start, duration_s=SOUND_CHECK_SPAN_S, path=path)
        except DecodeError as e:
            errors.append(e.reason)
            continue
        if pad < 1.0:
            return ""
    where = ", ".join(f"{max(0.0, at * duration - SOUND_CHECK_SPAN_S / 2):.1f} s" for at in SOUND_CHECK_AT)
    detail = f" ({errors[-1]})" if errors else " (seeking, and decoding from the start, found nothing there)"
    return f"its audio stream gives no samples at clip times {where}{detail}"


def _decoded_end_head(container: Any, stream: Any) -> tuple[float | None, int]:
    """Decode the first few frames of `stream` from the file's start."""
    from avsf.data.decode import decode_tolerant, frame_time, origin_s, time_base_s

    container.seek(0)
    origin = origin_s(container)
    end, count = None, 0
    for frame in decode_tolerant(container, stream, path="", what=stream.type):
        t = frame_time(frame, time_base_s(stream), origin)
        end = t if t is not None else end
        count += 1
        if count >= 3:
            break
    return end, count


# --- guarded probing --------------------------------------------------------------------
def _child_main(conn: Any) -> None:
    """Prober loop in a child process: receive (path, deep), send back a ProbeResult dict."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    faulthandler.disable()  # a decoder crash is reported by the parent, not dumped here
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        path, deep = msg
        conn.send(asdict(probe_file(path, deep=deep)))


def _context() -> Any:
    # fork starts a prober in milliseconds (no re-import); the child only runs FFmpeg
    return mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")


@dataclass
class _Prober:
    process: Any
    conn: Any
    path: str | None = None
    started: float = 0.0


class GuardedProber:
    """A few child processes that probe files; a child that dies or overruns `timeout_s` on a
    file is replaced, and that file is reported as "crashed" or "timeout"."""

    def __init__(self, *, workers: int = 1, timeout_s: float = 60.0):
        self.workers = max(1, workers)
        self.timeout_s = timeout_s
        self._ctx = _context()
        self._probers: list[_Prober] = []

    def _start(self) -> _Prober:
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=_child_main, args=(child,), daemon=True)
        proc.start()
        child.close()
        return _Prober(proc, parent)

    def _stop(self, prober: _Prober, *, kill: bool) -> None:
        try:
            if kill:
                prober.process.kill()
            else:
                prober.conn.send(None)
        except (OSError, BrokenPipeError):
            pass
        prober.process.join(timeout=5)
        if prober.process.is_alive():
            prober.process.kill()
            prober.process.join(timeout=5)
        prober.conn.close()

    def close(self) -> None:
        for p in self._probers:
            self._stop(p, kill=False)
        self._probers = []

    def __enter__(self) -> "GuardedProber":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def probe(self, paths: Iterable[str], *, deep: bool) -> Iterator[ProbeResult]:
        """Probe every path (results in completion order)."""
        todo = list(paths)[::-1]
        if not self._probers:
            self._probers = [self._start() for _ in range(min(self.workers, max(1, len(todo))))]
        idle = list(self._probers)
        busy: dict[Any, _Prober] = {}
        while todo or busy:
            while todo and idle:
                prober = idle.pop()
                prober.path, prober.started = todo.pop(), time.monotonic()
                try:
                    prober.conn.send((prober.path, deep))
                except (OSError, BrokenPipeError):
                    todo.append(prober.path)
                    prober = self._replace(prober)
                    idle.append(prober)
                    continue
                busy[prober.conn] = prober
            now = time.monotonic()
            wait_s = min(p.started + self.timeout_s for p in busy.values()) - now if busy else 0
            ready = wait(list(busy) + [p.process.sentinel for p in busy.values()], timeout=max(0.0, wait_s))
            for prober in list(busy.values()):
                result = None
                if prober.conn in ready or prober.process.sentinel in ready:
                    try:
                        if prober.conn.poll():
                            result = ProbeResult(**prober.conn.recv())
                    except (EOFError, OSError):
                        result = None
                    if result is None and not prober.process.is_alive():
                        code = prober.process.exitcode
                        why = f"killed by signal {-code} ({_signal_name(-code)})" if code and code < 0 else f"exit code {code}"
                        result = ProbeResult(prober.path, "crashed", f"the decoder process died on this file: {why}")
                elif time.monotonic() - prober.started >= self.timeout_s:
                    result = ProbeResult(prober.path, "timeout", f"probing took longer than {self.timeout_s:g} s (decoder hang)")
                if result is None:
                    continue
                del busy[prober.conn]
                if result.status in ("crashed", "timeout"):
                    prober = self._replace(prober)
                idle.append(prober)
                yield result

    def _replace(self, prober: _Prober) -> _Prober:
        self._stop(prober, kill=True)
        fresh = self._start()
        self._probers = [fresh if p is prober else p for p in self._probers]
        return fresh


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return "unknown"


def probe_files(paths: list[str], *, deep: bool, workers: int = 1, timeout_s: float = 60.0) -> dict[str, ProbeResult]:
    """Probe `paths` in guarded child processes; {path: ProbeResult}."""
    with GuardedProber(workers=workers, timeout_s=timeout_s) as prober:
        return {r.path: r for r in prober.probe(paths, deep=deep)}


# --- header cache for dataset statistics ------------------------------------------------
def cache_dir() -> Path:
    return Path(os.environ.get("AVSF_CACHE_DIR", Path.home() / ".cache" / "avsf"))


def header_probe_cached(paths: list[str], *, timeout_s: float, cache_key: str) -> dict[str, ProbeResult]:
    """Header probes of `paths`, reusing earlier results for files whose size and mtime are
    unchanged (cached under ~/.cache/avsf, or $AVSF_CACHE_DIR)."""
    cache_file = cache_dir() / "probe" / (hashlib.sha256(cache_key.encode()).hexdigest()[:16] + ".json")
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    results: dict[str, ProbeResult] = {}
    todo = []
    stamps = {}
    for path in paths:
        try:
            st = os.stat(path)
            stamp = [st.st_size, st.st_mtime_ns]
        except OSError:
            results[path] = ProbeResult(path, "missing", "file not found")
            continue
        stamps[path] = stamp
        hit = cache.get(path)
        if hit and hit.get("stamp") == stamp:
            results[path] = ProbeResult(**hit["result"])
        else:
            todo.append(path)
    if todo:
        # a few probers for big lists (a cold Kinetics cache is ~240k headers)
        workers = 1 if len(todo) < 64 else max(1, min(4, (os.cpu_count() or 1)))
        fresh = probe_files(todo, deep=False, workers=workers, timeout_s=timeout_s)
        results.update(fresh)
        for path, res in fresh.items():
            if res.status not in ("crashed", "timeout"):  # a flaky machine should not stick
                cache[path] = {"stamp": stamps[path], "result": asdict(res)}
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(cache))
            os.replace(tmp, cache_file)
        except OSError:
            pass  # a read-only home only costs the cache
    return results
