"""Decode a clip's frames and the matching audio span from any container FFmpeg reads (PyAV).

Times are seconds from the file's origin: the video stream's start time (or the audio's, for
an audio-only file). Both streams are measured from the same origin, so encoder delays and
muxer preloads (mpeg-ps starts at 0.5 s) do not shift audio against video.

Only what a clip needs is decoded: the video is sought to the keyframe before the clip and
decoded up to its end; the audio stream is sought separately and decoded over the span.

Seeking never fails silently (:func:`seek_attempts`). A seek that raises (an AVI without an
index answers EPERM), lands past the clip (MPEG-TS lands on any packet, and the decoder drops
everything up to the next keyframe) or yields nothing is retried from 2 s and 10 s earlier,
then from the start of the file in a freshly opened demuxer (a failed seek can leave the old
one at its end). A clip from an unseekable file is therefore the clip of a seekable copy.

Multichannel audio becomes mono by ITU-R BS.775 weights (:func:`mono_weights`).

Threading: FFmpeg decodes with one thread per process (``thread_count = 1``). Parallelism
comes from the loader's worker processes; FFmpeg's own thread pools inside forked workers,
next to PyTorch's OpenMP pool, are a known source of deadlocks and oversubscription.
"""

from __future__ import annotations

import functools
import os
import stat
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from avsf.errors import UserError

# A frame whose timestamp is within a tolerance of a requested time counts as shown at that
# time: float rounding must not pick the previous frame, and containers with coarse time bases
# (mkv/webm store milliseconds) round timestamps by up to half a tick (see _time_tolerance).
_TIME_TOL_S = 1e-6
# Environment hook used only by the tests: "abort=<substr>" or "hang=<substr>" (";"-separated)
# makes any decode of a path containing <substr> call os.abort() or sleep forever, standing in
# for FFmpeg crashes and hangs that no try/except can catch.
FAULT_ENV = "AVSF_TEST_FAULT"


class DecodeError(UserError):
    """A file that cannot be opened or decoded; the message names the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


@dataclass
class MediaInfo:
    """What the header says about a file (no frames decoded)."""

    path: str
    duration_s: float
    fps: float
    num_frames: int
    has_video: bool
    has_audio: bool
    sample_rate: int
    channels: int
    width: int
    height: int
    video_codec: str
    audio_codec: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DecodedClip:
    """A clip as decoded: frames at the requested times and the mono audio of its span.

    frames: uint8 [N,H,W,3] RGB (None when video was not requested or is absent).
    audio: float32 [S] mono at the requested sample rate, exactly the clip's span
        (None when audio was not requested or the file has none).
    audio_pad: fraction of the span with no decoded audio (zeros were put there).
    """

    frames: np.ndarray | None
    audio: np.ndarray | None
    has_audio: bool
    audio_pad: float


def inject_faults(path: str | os.PathLike) -> None:
    """Test-only fault injection (see FAULT_ENV); a no-op unless the variable is set."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    for item in spec.split(";"):
        kind, _, needle = item.partition("=")
        if needle and needle in str(path):
            if kind == "abort":
                os.abort()
            if kind == "hang":
                while True:
                    time.sleep(3600)


def open_media(path: str | os.PathLike) -> Any:
    """Open a file with PyAV; raise DecodeError (missing, empty, unreadable) otherwise."""
    import av

    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DecodeError(path, "file not found") from None
    except OSError as e:
        raise DecodeError(path, f"cannot access: {e.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise DecodeError(path, "is a directory, not a media file")
    if st.st_size == 0:
        raise DecodeError(path, "zero-length file")
    inject_faults(path)
    try:
        container = av.open(os.fspath(path), mode="r", metadata_errors="ignore")
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as e:
        raise DecodeError(path, f"cannot open: {e}") from e
    if not container.streams.video and not container.streams.audio:
        container.close()
        raise DecodeError(path, "no video or audio stream")
    for stream in list(container.streams.video[:1]) + list(container.streams.audio[:1]):
        stream.codec_context.thread_count = 1  # see the module docstring
        stream.codec_context.thread_type = "SLICE"
    return container


def _stream_start_s(stream: Any) -> float:
    if stream.start_time is None or stream.time_base is None:
        return 0.0
    return float(stream.start_time * stream.time_base)


def origin_s(container: Any) -> float:
    """The time (in stream seconds) that clip times are measured from."""
    if container.streams.video:
        return _stream_start_s(container.streams.video[0])
    return _stream_start_s(container.streams.audio[0])


# formats whose per-stream durations FFmpeg guesses from the bit rate; their container
# duration comes from the first and last timestamps instead
_PTS_TIMED_FORMATS = {"mpeg", "mpegts", "mpegvideo"}


def _duration_s(container: Any) -> float:
    streams = list(container.streams.video[:1]) or list(container.streams.audio[:1])
    s = streams[0]
    container_end = None
    if container.duration:
        container_end = ((container.start_time or 0) + container.duration) / 1e6
    if s.duration and s.time_base and not (set(container.format.name.split(",")) & _PTS_TIMED_FORMATS
                                           and container_end is not None):
        return float(s.duration * s.time_base)
    if container_end is not None:
        return max(0.0, container_end - origin_s(container))
    return 0.0


def _fps(stream: Any) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return float(rate)
    return 0.0


def info_from_container(container: Any, path: str | os.PathLike) -> MediaInfo:
    v = container.streams.video[0] if container.streams.video else None
    a = container.streams.audio[0] if container.streams.audio else None
    duration = _duration_s(container)
    fps = _fps(v) if v is not None else 0.0
    frames = int(v.frames) if v is not None and v.frames else int(round(duration * fps))
    return MediaInfo(
        path=str(path), duration_s=duration, fps=fps, num_frames=frames,
        has_video=v is not None, has_audio=a is not None,
        sample_rate=int(a.codec_context.sample_rate or a.rate or 0) if a is not None else 0,
        channels=int(a.codec_context.channels) if a is not None else 0,
        width=int(v.codec_context.width) if v is not None else 0,
        height=int(v.codec_context.height) if v is not None else 0,
        video_codec=v.codec_context.name if v is not None else "",
        audio_codec=a.codec_context.name if a is not None else "",
    )


def probe(path: str | os.PathLike) -> MediaInfo:
    """Read the header of a file (duration, fps, streams) without decoding frames."""
    container = open_media(path)
    try:
        return info_from_container(container, path)
    finally:
        container.close()


def _seek(container: Any, stream: Any, t_s: float) -> None:
    """Seek `stream` to the keyframe at or before stream time `t_s` (seconds)."""
    target = int(max(0.0, t_s) / stream.time_base) if stream.time_base else 0
    container.seek(target, stream=stream, backward=True, any_frame=False)


# how much earlier than the wanted time a seek is retried after it landed past it (s)
SEEK_BACKOFF_S = (0.0, 2.0, 10.0)


def seek_attempts(container: Any, stream: Any, t_s: float, *, path: str | os.PathLike):
    """Places to decode `stream` from for a span starting at stream time `t_s` (seconds), in
    order: yields (container, stream, last) positioned there; the caller decodes, and asks for
    the next place when that one landed past the span or yielded nothing. `last` marks the
    file's start, where what decodes is what the file holds.

    The keyframe before `t_s`, then before `t_s - 2` and `t_s - 10` s, then the file's start
    in a fresh demuxer (never sought: it reads what an unseekable file holds). A seek that
    raises skips straight to the start. Without a path, the last place is a seek to 0.
    """
    import av

    kind = stream.type
    start = _stream_start_s(stream)
    for back in SEEK_BACKOFF_S:
        if t_s - back <= start or (back and t_s - back + SEEK_BACKOFF_S[1] <= start):
            # at or near the start: read it as a sequential reader does (a seek to the very
            # start can skip an edit list's priming, so AAC's first samples would differ)
            break
        try:
            _seek(container, stream, t_s - back)
        except (av.FFmpegError, OSError):
            break  # unseekable (no index, a pipe): only the start can help
        yield container, stream, False
    if not path:
        try:
            container.seek(0)
        except (av.FFmpegError, OSError):
            return
        yield container, stream, True
        return
    fresh = open_media(path)
    try:
        yield fresh, (fresh.streams.video[0] if kind == "video" else fresh.streams.audio[0]), True
    finally:
        fresh.close()


def frame_time(frame: Any, time_base_s: float | None, origin: float) -> float | None:
    """Seconds from the origin at which `frame` is shown (None without a pts)."""
    pts = frame.pts
    if pts is None or time_base_s is None:
        return None
    return pts * time_base_s - origin


def time_base_s(stream: Any) -> float | None:
    """The stream's time base as a float (PyAV builds a new Fraction on every access)."""
    tb = stream.time_base
    return float(tb) if tb is not None else None


_reformatter = None


def to_rgb(frame: Any) -> np.ndarray:
    """A decoded frame as uint8 [H,W,3] RGB (a read-only view).

    One swscale context is kept per process and reused while frame sizes stay the same, and
    swscale runs single-threaded (its default spawns a thread pool per conversion).
    """
    global _reformatter
    if _reformatter is None:
        from av.video.reformatter import VideoReformatter

        _reformatter = VideoReformatter()
    rgb = _reformatter.reformat(frame, format="rgb24", threads=1)
    plane = rgb.planes[0]
    # a view of the frame's buffer (the array keeps the plane, and so the frame, alive):
    # the clip's np.stack is then the only copy
    rows = np.frombuffer(plane, np.uint8).reshape(rgb.height, plane.line_size)
    return rows[:, : rgb.width * 3].reshape(rgb.height, rgb.width, 3)


def _time_tolerance(tb: float | None, fps: float) -> float:
    """Half a time-base tick where ticks are finer than frames (their pts are rounded), else
    float rounding only (ticks of a frame or more, as in avi, hold exact frame numbers)."""
    if tb and fps and tb < 0.5 / fps:
        return max(_TIME_TOL_S, 0.5 * tb)
    return _TIME_TOL_S


def decode_frames(container: Any, *, times: np.ndarray, path: str | os.PathLike = "") -> np.ndarray:
    """The frame shown at each of `times` (seconds from the origin, ascending).

    Returns uint8 [len(times),H,W,3] RGB. Times before the first frame get the first frame;
    times after the last frame get the last one (a clip running past the end repeats it).
    """
    origin = origin_s(container)
    error = DecodeError(path, "no video frame could be decoded")
    attempts = seek_attempts(container, container.streams.video[0], origin + float(times[0]), path=path)
    try:
        for c, stream, last in attempts:
            try:
                out = _frames_from_here(c, stream, times=times, origin=origin, path=path, at_start=last)
            except DecodeError as e:  # nothing decoded from here: the next place may do better
                error = e
                continue
            if out is not None:
                return out
    finally:
        attempts.close()
    raise error


def _frames_from_here(container: Any, stream: Any, *, times: np.ndarray, origin: float,
                      path: str | os.PathLike, at_start: bool) -> np.ndarray | None:
    """Decode from the demuxer's position; None when it landed past times[0] or gave nothing
    (DecodeError when nothing decodes at all). `at_start`: decoding from the file's start,
    so the first frame is the first there is."""
    tb = time_base_s(stream)
    tol = _time_tolerance(tb, _fps(stream))
    n = len(times)
    out: list[np.ndarray | None] = [None] * n
    k = 0
    prev = prev_rgb = None
    first = _stream_start_s(stream) - origin  # the stream's first frame, in clip time
    try:
        # a decoder that drops everything up to a keyframe beyond the clip gives up here
        for frame in decode_tolerant(container, stream, path=path, what="video",
                                     give_up_after_s=origin + float(times[-1]) + 2.0):
            ts = frame_time(frame, tb, origin)
            if ts is None:
                ts = (float(times[k]) if k < n else 0.0)
            if prev is None and not at_start and ts > max(float(times[0]), first) + tol:
                return None  # landed past the clip's first frame (or the stream's)
            while k < n and times[k] + tol < ts:
                if prev is None:  # clip starts before the first frame
                    prev = frame
                if prev_rgb is None:  # convert only frames that are used
                    prev_rgb = to_rgb(prev)
                out[k] = prev_rgb
                k += 1
            if k == n:
                break
            if prev is not frame:
                prev, prev_rgb = frame, None
    except DecodeError:
        if prev is None:
            raise
    if prev is None:
        return None
    if k < n:
        last = prev_rgb if prev_rgb is not None else to_rgb(prev)
        for j in range(k, n):
            out[j] = last
    return np.stack(out)  # type: ignore[arg-type]


_MAX_BAD_PACKETS = 8  # consecutive undecodable packets before a stream counts as broken


def decode_tolerant(container: Any, stream: Any, *, path: str | os.PathLike, what: str,
                    give_up_after_s: float | None = None):
    """Decoded frames of `stream` from the demuxer's position, skipping undecodable packets.

    Right after a seek the first packet can be partial (mpeg-ps, mp2); a corrupt packet in the
    middle is skipped too. Many bad packets in a row end the stream (a truncated tail);
    a stream that yields nothing at all raises DecodeError. With `give_up_after_s` (stream
    seconds), a stream that has yielded nothing by a packet of that time ends there.
    """
    import av

    bad = 0
    got_any = False
    last_error: Exception | None = None
    tb = time_base_s(stream)
    try:
        for packet in container.demux(stream):
            if give_up_after_s is not None and not got_any and tb is not None:
                when = packet.dts if packet.dts is not None else packet.pts
                if when is not None and when * tb > give_up_after_s:
                    return
            try:
                frames = packet.decode()
            except (av.FFmpegError, ValueError) as e:
                bad += 1
                last_error = e
                if bad >= _MAX_BAD_PACKETS:
                    break
                continue
            bad = 0
            for frame in frames:
                got_any = True
                yield frame
    except av.FFmpegError as e:  # the demuxer itself gave up (a truncated file)
        last_error = e
    if not got_any and last_error is not None:
        raise DecodeError(path, f"{what} decode failed: {last_error}")


def _frame_samples(frame: Any) -> np.ndarray:
    """An audio frame as float32 [C,n] in [-1, 1], whatever its sample format."""
    x = frame.to_ndarray()
    channels = frame.layout.nb_channels if hasattr(frame.layout, "nb_channels") else len(frame.layout.channels)
    if not frame.format.is_planar:
        x = x.reshape(-1, channels).T  # packed: [1, n*C] interleaved
    if x.dtype == np.uint8:
        return (x.astype(np.float32) - 128.0) / 128.0
    if x.dtype == np.int16:
        return x.astype(np.float32) / 32768.0
    if x.dtype == np.int32:
        return (x.astype(np.float64) / 2147483648.0).astype(np.float32)
    if x.dtype == np.int64:
        return (x.astype(np.float64) / 9223372036854775808.0).astype(np.float32)
    return x.astype(np.float32, copy=False)


# Mono downmix, per channel (FFmpeg's channel names). ITU-R BS.775 to stereo, as FFmpeg's
# default matrix does it (centre and surrounds at -3 dB into both sides, LFE dropped), then
# the mean of left and right: a stereo file becomes (L + R) / 2, and sound in the centre of a
# 5.1 file comes out at 1/sqrt(2) (-3 dB), where a plain mean of six channels gave 1/6.
_HALF, _CENTRE, _SURROUND = 0.5, 0.5 ** 0.5, 0.5 ** 1.5
MONO_WEIGHTS = {
    "FL": _HALF, "FR": _HALF, "FC": _CENTRE, "LFE": 0.0, "LFE2": 0.0,
    "FLC": _HALF, "FRC": _HALF, "BC": _HALF,  # front pair of centre: to its side; back centre: 1/sqrt(2) to each
    "BL": _SURROUND, "BR": _SURROUND, "SL": _SURROUND, "SR": _SURROUND,
    "TFL": _SURROUND, "TFR": _SURROUND, "TBL": _SURROUND, "TBR": _SURROUND,
}


@functools.lru_cache(maxsize=64)
def mono_weights(channel_names: tuple[str, ...]) -> np.ndarray:
    """Weights [C] that make a frame of these channels mono (see MONO_WEIGHTS).

    One channel is kept as it is. Channels of no stated order ("2 channels", as AVI and raw
    PCM carry them) or names outside the table get equal weights 1/C: their mean.
    """
    if len(channel_names) == 1:
        return np.ones(1, np.float32)
    if all(n in MONO_WEIGHTS for n in channel_names):
        return np.array([MONO_WEIGHTS[n] for n in channel_names], np.float32)
    return np.full(len(channel_names), 1.0 / len(channel_names), np.float32)


def _to_mono(frame: Any, x: np.ndarray) -> np.ndarray:
    if x.shape[0] == 1:
        return x[0]
    return mono_weights(tuple(ch.name for ch in frame.layout.channels)) @ x


def _stream_end_s(stream: Any) -> float | None:
    """Where the stream's header says it ends (stream seconds), if it says."""
    if stream.duration and stream.time_base:
        return _stream_start_s(stream) + float(stream.duration * stream.time_base)
    return None


def decode_audio_span(container: Any, *, start_s: float, duration_s: float,
                      path: str | os.PathLike = "") -> tuple[np.ndarray, int, float]:
    """Mono audio over [start_s, start_s + duration_s) at the stream's native rate.

    Returns (samples float32 [S], sample_rate, padded fraction). Samples the stream does not
    cover (before its start, after its end, a truncated tail) are zeros, counted as padding.
    The stream is sought a little before `start_s` (see :func:`seek_attempts` for what
    happens when that fails).
    """
    stream = container.streams.audio[0]
    origin = origin_s(container)
    rate = int(stream.codec_context.sample_rate or stream.rate)
    if rate <= 0:
        raise DecodeError(path, "audio stream has no sample rate")
    total = max(1, int(round(duration_s * rate)))
    end = _stream_end_s(stream)
    if end is not None and origin + start_s >= end + 1.0:
        return np.zeros(total, np.float32), rate, 1.0  # past the stream's end (audio shorter than video)
    error: DecodeError | None = None
    # start a little early: the packet holding start_s may begin up to one frame before it
    attempts = seek_attempts(container, stream, origin + start_s - 0.2, path=path)
    try:
        for c, s, last in attempts:
            try:
                got = _audio_from_here(c, s, origin=origin, start_s=start_s, total=total, rate=rate, path=path,
                                       at_start=last)
            except DecodeError as e:
                error = e
                continue
            if got is not None:
                return got[0], rate, got[1]
    finally:
        attempts.close()
    if error is not None:
        raise error
    return np.zeros(total, np.float32), rate, 1.0  # the stream holds nothing at this span


def _audio_from_here(container: Any, stream: Any, *, origin: float, start_s: float, total: int, rate: int,
                     path: str | os.PathLike, at_start: bool) -> tuple[np.ndarray, float] | None:
    """(samples, padded fraction) decoded from the demuxer's position; None when it landed
    past start_s or gave nothing there (`at_start`: from the file's start, where what
    decodes is what there is)."""
    tb = time_base_s(stream)
    first = _stream_start_s(stream) - origin  # the stream's first sample, in clip time
    out = np.zeros(total, dtype=np.float32)
    covered = np.zeros(total, dtype=bool)
    next_pos: int | None = None  # running sample position when a frame has no pts
    jitter = int(np.ceil(float(stream.time_base) * rate)) + 1 if stream.time_base else 1
    span_end_s = start_s + total / rate
    for frame in decode_tolerant(container, stream, path=path, what="audio",
                                 give_up_after_s=origin + span_end_s + 1.0):
        ts = frame_time(frame, tb, origin)
        if ts is not None:
            if next_pos is None and not at_start and ts > max(start_s, first) + (jitter + 1) / rate:
                return None  # landed past the span's start: its beginning would be padding
            pos = int(round((ts - start_s) * rate))
            # containers with coarse time bases (mkv/webm: 1 ms) round pts; a frame that
            # continues the previous one within that rounding is placed right after it
            if next_pos is not None and abs(pos - next_pos) <= jitter:
                pos = next_pos
        elif next_pos is not None:
            pos = next_pos
        else:
            pos = -int(round(start_s * rate))
        x = _frame_samples(frame)
        next_pos = pos + x.shape[1]
        if pos >= total:
            break
        lo, hi = max(pos, 0), min(pos + x.shape[1], total)
        if hi > lo:
            out[lo:hi] = _to_mono(frame, x[:, lo - pos:hi - pos])
            covered[lo:hi] = True
    if next_pos is None and not at_start and start_s < (_stream_end_s(stream) or float("inf")) - origin:
        return None  # nothing decoded where the stream should have sound
    return out, float(1.0 - covered.mean())


@functools.lru_cache(maxsize=8)
def _resampler(orig_rate: int, new_rate: int):
    import torchaudio

    return torchaudio.transforms.Resample(orig_freq=orig_rate, new_freq=new_rate)  # keeps its sinc kernel


def resample_audio(x: np.ndarray, *, orig_rate: int, new_rate: int, length: int) -> np.ndarray:
    """Band-limited resampling (torchaudio's sinc interpolation) to exactly `length` samples."""
    import torch

    if orig_rate != new_rate:
        with torch.no_grad():
            y = _resampler(orig_rate, new_rate)(torch.from_numpy(np.ascontiguousarray(x))).numpy()
    else:
        y = x
    if y.shape[0] >= length:
        return np.ascontiguousarray(y[:length], dtype=np.float32)
    return np.pad(y, (0, length - y.shape[0])).astype(np.float32)


def decode_clip(path: str | os.PathLike, *, start_s: float, duration_s: float, num_frames: int,
                audio_rate: int, want_video: bool = True, want_audio: bool = True,
                container: Any = None) -> DecodedClip:
    """Decode `num_frames` frames evenly spaced over [start_s, start_s + duration_s) and the
    mono audio of exactly that span at `audio_rate` Hz.

    Frame k is the one shown at ``start_s + k * duration_s / num_frames``.
    """
    own = container is None
    if own:
        container = open_media(path)
    try:
        frames = audio = None
        pad = 0.0
        has_audio = bool(container.streams.audio)
        if want_video:
            if not container.streams.video:
                raise DecodeError(path, "no video stream")
            times = start_s + np.arange(num_frames) * (duration_s / num_frames)
            frames = decode_frames(container, times=times, path=path)
        if want_audio and has_audio:
            native, rate, pad = decode_audio_span(container, start_s=start_s, duration_s=duration_s, path=path)
            audio = resample_audio(native, orig_rate=rate, new_rate=audio_rate,
                                   length=max(1, int(round(duration_s * audio_rate))))
        return DecodedClip(frames=frames, audio=audio, has_audio=has_audio, audio_pad=pad)
    finally:
        if own:
            container.close()
