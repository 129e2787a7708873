"""Write video and audio into any container FFmpeg can mux, through PyAV.

Used by the built-in synthetic dataset and by the tests, which write fixtures in every format
the loader must read (mp4 h264/aac, webm vp8|vp9/vorbis|opus, avi mjpeg/pcm_s16le, mkv,
mpg mpeg2video/mp2, ...). Output is deterministic (single-threaded encoders, x264 without
MB-tree, bit-exact muxing, no timestamps of the wall clock) and written atomically (temp
file, then rename).

Why no MB-tree: libx264 (core 165, in the PyAV 18 wheel) with B-frames and MB-tree rate
control reads heap memory it never wrote, so its bytes for the same frames depend on what the
process allocated and freed before (other clips, other libraries). Evidence: one 64x64 clip
encoded 30 times in one process gave up to 11 different bitstreams; with glibc's
``MALLOC_PERTURB_`` (which fills every allocation with one byte) it gave one bitstream per
byte value, a different one for 85 and for 170; with ``mbtree=0`` (or ``bframes=0``) it gave
the same bitstream under every value. ``tests/test_media_determinism.py`` keeps it so.

Timestamps: video frame ``i`` has pts ``i / fps``; audio sample ``j`` has pts
``j / sample_rate``; both streams start at 0, so the decoder's clock lines them up.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from avsf.errors import UserError

# channel count -> FFmpeg's default layout name
_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}
# sample formats in order of preference (float first: no requantisation before the encoder)
_SAMPLE_FORMATS = ("fltp", "flt", "s16p", "s16", "s32p", "s32")
# encoders FFmpeg marks experimental: they need strict=-2 to open
_EXPERIMENTAL = {"vorbis", "opus"}
_QP2LAMBDA = 118  # FFmpeg's FF_QP2LAMBDA: quantiser -> lambda units of global_quality


def _video_rate(fps: float) -> Fraction:
    """The exact frame rate: NTSC-style rates (29.97, 23.976, ...) become n/1001."""
    if fps <= 0 or not np.isfinite(fps):
        raise UserError(f"fps={fps} must be a positive number")
    rate = Fraction(fps).limit_denominator(1001)
    return rate


def _pick_pix_fmt(codec: Any, wanted: str) -> str:
    names = [f.name for f in (codec.video_formats or [])]
    full_range = wanted.replace("yuv", "yuvj", 1) if wanted.startswith("yuv") and not wanted.startswith("yuvj") else wanted
    if codec.name == "mjpeg" and full_range in names:
        return full_range  # FFmpeg's mjpeg encoder refuses limited-range yuv420p
    if not names or wanted in names:
        return wanted
    if full_range in names:
        return full_range
    return names[0]


def _pick_sample_format(codec: Any) -> str:
    names = [f.name for f in (codec.audio_formats or [])]
    if not names:
        return "fltp"
    for name in _SAMPLE_FORMATS:
        if name in names:
            return name
    return names[0]


def _check_inputs(frames: np.ndarray | None, audio: np.ndarray | None) -> None:
    if frames is None and audio is None:
        raise UserError("write_media needs frames, audio, or both; got neither")
    if frames is not None:
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
            raise UserError(f"frames must be uint8 [T,H,W,3] with T >= 1; got {frames.dtype} {list(frames.shape)}")
    if audio is not None:
        if audio.ndim != 2 or audio.shape[0] not in _LAYOUTS or audio.shape[1] < 1:
            raise UserError(f"audio must be float [C,S] with 1 <= C <= 8 and S >= 1; got {list(audio.shape)}")


def _add_video_stream(container: Any, *, codec_name: str, rate: Fraction, height: int, width: int,
                      pix_fmt: str, options: dict[str, str] | None) -> Any:
    stream = container.add_stream(codec_name, rate=rate)
    codec = stream.codec_context.codec
    stream.pix_fmt = _pick_pix_fmt(codec, pix_fmt)
    if stream.pix_fmt.startswith(("yuv420", "yuvj420", "nv12", "nv21")) and (height % 2 or width % 2):
        raise UserError(f"{codec_name} with {stream.pix_fmt} needs an even frame size; got {width}x{height} "
                        f"(crop or pad the frames, or use pix_fmt='yuv444p')")
    stream.width, stream.height = width, height
    stream.codec_context.time_base = 1 / rate
    stream.codec_context.thread_count = 1  # multi-threaded encoders may differ run to run
    defaults: dict[str, str] = {"flags": "+bitexact"}
    if codec_name == "libx264":
        # mbtree=0: see the module docstring (MB-tree + B-frames make x264's bytes depend on the heap)
        defaults.update({"crf": "18", "preset": "veryfast", "threads": "1", "x264-params": "mbtree=0"})
    elif codec_name in ("libvpx", "libvpx-vp9"):
        defaults.update({"crf": "10", "b": "2M", "deadline": "realtime", "cpu-used": "8"})
    elif codec_name in ("mjpeg", "mpeg2video", "mpeg4", "mpeg1video"):
        # constant quantiser 3 (what `ffmpeg -q:v 3` sets): good quality at any size
        defaults.update({"flags": "+bitexact+qscale", "global_quality": str(3 * _QP2LAMBDA)})
    stream.codec_context.options = {**defaults, **(options or {})}
    return stream


def _add_audio_stream(container: Any, *, codec_name: str, sample_rate: int, channels: int,
                      options: dict[str, str] | None) -> Any:
    import av

    codec = av.Codec(codec_name, "w")
    rates = codec.audio_rates
    if rates and sample_rate not in rates:
        raise UserError(f"{codec_name} cannot encode at {sample_rate} Hz; it supports {sorted(rates)}")
    stream = container.add_stream(codec_name, rate=sample_rate)
    ctx = stream.codec_context
    ctx.layout = _LAYOUTS[channels]
    ctx.format = _pick_sample_format(codec)
    ctx.time_base = Fraction(1, sample_rate)
    ctx.thread_count = 1
    opts = {"flags": "+bitexact", **(options or {})}
    if codec_name in _EXPERIMENTAL:
        opts.setdefault("strict", "-2")
    ctx.options = opts
    return stream


def _audio_frames(audio: np.ndarray, *, stream: Any, sample_rate: int) -> list[Any]:
    """Cut [C,S] float audio into encoder-sized frames with sample-accurate pts."""
    import av

    ctx = stream.codec_context
    fmt = ctx.format.name
    layout = _LAYOUTS[audio.shape[0]]
    size = ctx.frame_size or 1024  # 0 = any size (pcm, flac)
    x = np.clip(audio.astype(np.float32), -1.0, 1.0)
    frames = []
    for start in range(0, x.shape[1], size):
        chunk = x[:, start:start + size]
        if ctx.frame_size and chunk.shape[1] < size and not (ctx.codec.capabilities & 0x10000):
            # encoders without the variable-frame-size capability need a full last frame
            chunk = np.pad(chunk, ((0, 0), (0, size - chunk.shape[1])))
        if fmt.startswith("s16"):
            data = np.round(chunk * 32767.0).astype(np.int16)
        elif fmt.startswith("s32"):
            data = np.round(chunk.astype(np.float64) * 2147483647.0).astype(np.int32)
        else:
            data = chunk
        if not fmt.endswith("p"):  # packed: one plane, channels interleaved
            data = np.ascontiguousarray(data.T).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=fmt, layout=layout)
        frame.sample_rate = sample_rate
        frame.pts = start
        frame.time_base = Fraction(1, sample_rate)
        frames.append(frame)
    return frames


def write_media(path: str | os.PathLike, *, frames: np.ndarray | None, fps: float,
                audio: np.ndarray | None, sample_rate: int, video_codec: str = "libx264",
                audio_codec: str = "aac", pix_fmt: str = "yuv420p",
                options: dict[str, str] | None = None,
                audio_options: dict[str, str] | None = None,
                container_format: str | None = None) -> None:
    """Encode ``frames`` and/or ``audio`` into ``path`` (container chosen by its suffix).

    Args:
        path: output file; its suffix picks the container (``.mp4``, ``.webm``, ``.avi``,
            ``.mkv``, ``.mpg``, ...) unless ``container_format`` names one.
        frames: uint8 [T,H,W,3] RGB, or None for an audio-only file.
        fps: frame rate of ``frames`` (e.g. 30, 25, 29.97).
        audio: float [C,S] in [-1, 1] (C channels, S samples), or None for a silent file.
        sample_rate: audio samples per second.
        video_codec, audio_codec, pix_fmt: FFmpeg encoder names and pixel format.
        options: encoder options for the video stream (e.g. ``{"crf": "23"}``).
        audio_options: encoder options for the audio stream.
        container_format: FFmpeg muxer name when the suffix does not say it.
    """
    import av

    _check_inputs(frames, audio)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    rate = _video_rate(fps) if frames is not None else None
    try:
        with av.open(str(tmp), mode="w", format=container_format,
                     options={"fflags": "+bitexact"}) as container:
            vstream = astream = None
            if frames is not None:
                vstream = _add_video_stream(container, codec_name=video_codec, rate=rate,
                                            height=frames.shape[1], width=frames.shape[2],
                                            pix_fmt=pix_fmt, options=options)
            if audio is not None:
                astream = _add_audio_stream(container, codec_name=audio_codec, sample_rate=sample_rate,
                                            channels=audio.shape[0], options=audio_options)
            # interleave by time so muxers that do not reorder (avi) stay in sync
            events: list[tuple[float, int, Any]] = []
            if vstream is not None:
                for i in range(frames.shape[0]):
                    events.append((i / float(rate), 0, i))
            audio_list = _audio_frames(audio, stream=astream, sample_rate=sample_rate) if astream is not None else []
            for k, frame in enumerate(audio_list):
                events.append((frame.pts / sample_rate, 1, k))
            events.sort(key=lambda e: (e[0], e[1]))
            for _, kind, idx in events:
                if kind == 0:
                    vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[idx]), format="rgb24")
                    # convert here with a fresh scaler: the encoder's own reused scaler gives
                    # run-to-run different yuv now and then (seen with PyAV 18, rgb24 -> yuv420p)
                    vf = vf.reformat(format=vstream.pix_fmt)
                    vf.pts = idx
                    vf.time_base = 1 / rate
                    container.mux(vstream.encode(vf))
                else:
                    container.mux(astream.encode(audio_list[idx]))
            for stream in (vstream, astream):
                if stream is not None:
                    container.mux(stream.encode(None))
        os.replace(tmp, path)
    except av.FFmpegError as e:
        raise UserError(f"cannot write {path} with video={video_codec!r} audio={audio_codec!r}: {e}") from e
    finally:
        if tmp.exists():
            tmp.unlink()
