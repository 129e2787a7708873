"""A corpus of real-world-shaped media files, written at test time, and an independent reference.

Every file carries one known event in both streams: a white frame and a click, at the same
presentation instant, over a steady tone and a grey-level frame pattern. The files vary what
real collections vary: container, video and audio codec, sample format (pcm 8/16/24/32-bit
and float), sample rate (8 to 96 kHz), channel layout (mono to 7.1), stream start offsets
either way (including MPEG-TS's usual 1.4 s), audio shorter than video, variable frame rate,
and AVI without an index (a streamed capture).

:func:`sequential_decode` is the reference: it decodes the whole file from its first packet,
never seeking, with its own timestamp handling and downmix table, so a seeking decoder can
be checked against it.

Time convention (as the loader's): times are seconds from the first video frame.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

TONE_HZ, TONE_AMP = 440.0, 0.25
CLICK_HZ, CLICK_AMP, CLICK_S = 2000.0, 0.6, 0.008
EVENT_S = 1.6  # presentation time of the white frame and the click, from the first video frame
SECONDS = 3.0


@dataclass(frozen=True)
class Case:
    """One corpus file: what it is made of, and the timing the decoder must recover."""

    name: str  # file name; its suffix picks the container unless `fmt` names one
    vcodec: str
    acodec: str | None
    rate: int = 44100
    channels: int = 2
    fps: Fraction = Fraction(25)
    video_start_s: float = 0.0  # pts of the first video frame
    audio_start_s: float = 0.0  # pts of the first audio sample
    audio_s: float | None = None  # audio length (None: as long as the video)
    vfr: bool = False  # irregular frame durations
    strip_avi_index: bool = False
    size: tuple[int, int] = (48, 64)  # height, width
    texture: bool = False  # noise over the grey: frames of a realistic size (several PES packets each)
    fmt: str | None = None
    vopts: dict = field(default_factory=dict)
    aopts: dict = field(default_factory=dict)

    @property
    def offset_s(self) -> float:
        """Where the audio starts, in clip time (negative: before the first video frame)."""
        return self.audio_start_s - self.video_start_s


_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}

CASES = [
    Case("h264_aac.mp4", "libx264", "aac", 44100, 2, Fraction(30)),
    Case("mpeg4_s24.mov", "mpeg4", "pcm_s24le", 48000, 2),
    Case("h264_flac_96k_7.1.mkv", "libx264", "flac", 96000, 8, Fraction(24)),
    Case("vp9_opus_5.1.webm", "libvpx-vp9", "libopus", 48000, 6, Fraction(30)),
    Case("vp8_vorbis.webm", "libvpx", "vorbis", 22050, 2),
    Case("mjpeg_u8.avi", "mjpeg", "pcm_u8", 11024, 1, Fraction(15)),  # as a photo-album program writes it
    Case("mjpeg_u8_noindex.avi", "mjpeg", "pcm_u8", 11024, 1, Fraction(15), strip_avi_index=True),
    Case("mpeg4_s16_noindex.avi", "mpeg4", "pcm_s16le", 16000, 2, strip_avi_index=True),
    Case("mpeg2_mp2.mpg", "mpeg2video", "mp2", 48000, 2, fmt="mpeg", size=(288, 352), texture=True),
    Case("h264_aac_1.4s.ts", "libx264", "aac", 48000, 2, video_start_s=1.4, audio_start_s=1.4,
         vopts={"g": "12"}),
    Case("h264_aac_onekey.ts", "libx264", "aac", 32000, 1,  # one keyframe: no seek point
         vopts={"x264-params": "scenecut=0:keyint=1000"}),
    Case("vp8_opus.ogg", "libvpx", "libopus", 48000, 2),
    Case("flv_mp3.flv", "flv", "libmp3lame", 44100, 1),
    Case("h263_aac.3gp", "h263", "aac", 8000, 1, Fraction(15), size=(96, 128)),
    Case("msmpeg4_wmav2.asf", "msmpeg4", "wmav2", 44100, 2),
    Case("h264_ac3_5.1_audio_first.mkv", "libx264", "ac3", 48000, 6, video_start_s=0.32),
    Case("h264_f32_quad_video_first.mov", "libx264", "pcm_f32le", 32000, 4, audio_start_s=0.4),
    Case("mpeg4_s32_2.1.mkv", "mpeg4", "pcm_s32le", 44100, 3, Fraction(30000, 1001)),
    Case("h264_s16_vfr.mkv", "libx264", "pcm_s16le", 16000, 2, Fraction(25), vfr=True),
    Case("h264_aac_short_audio.mp4", "libx264", "aac", 16000, 1, audio_s=1.0),
    Case("mpeg4_mp3.mkv", "mpeg4", "libmp3lame", 24000, 2, Fraction(20)),
    Case("mpeg4_f64.mkv", "mpeg4", "pcm_f64le", 12000, 1, Fraction(12)),
]


# --- content -------------------------------------------------------------------------------
def frame_times(case: Case) -> np.ndarray:
    """Presentation time of every video frame (clip time: the first frame is 0)."""
    n = int(round(SECONDS * case.fps))
    if not case.vfr:
        return np.arange(n) / float(case.fps)
    # durations cycling 1, 2, 1, 3 ticks of 1/(2 fps): irregular, every pts distinct
    ticks = np.cumsum([0] + [(1, 2, 1, 3)[i % 4] for i in range(n - 1)])
    return ticks / (2 * float(case.fps))


def event_frame(case: Case) -> int:
    """The white frame: the one shown at EVENT_S."""
    times = frame_times(case)
    return int(np.searchsorted(times, EVENT_S + 1e-9) - 1)


def event_time(case: Case) -> float:
    return float(frame_times(case)[event_frame(case)])


def grey_level(i: int) -> int:
    return 20 + (i % 28) * 8  # 20..236: never white


def video_frames(case: Case) -> np.ndarray:
    h, w = case.size
    n = len(frame_times(case))
    levels = np.array([grey_level(i) for i in range(n)], np.uint8)
    levels[event_frame(case)] = 255
    frames = np.broadcast_to(levels[:, None, None, None], (n, h, w, 3)).astype(np.int16)
    if case.texture:
        noise = np.random.default_rng(0).integers(-12, 13, size=(n, h, w, 1))
        frames = np.where(levels[:, None, None, None] == 255, 255, frames + noise)
    return np.clip(frames, 0, 255).astype(np.uint8)


def audio_signal(case: Case) -> np.ndarray:
    """float64 [C, S]: the tone, with the click at the event; sound in the front pair (or the
    mono channel) only, so any downmix that keeps front left/right at 1/2 gives the tone's level."""
    length = case.audio_s if case.audio_s is not None else SECONDS + case.video_start_s - case.audio_start_s
    n = int(round(length * case.rate))
    t = np.arange(n) / case.rate
    x = TONE_AMP * np.sin(2 * np.pi * TONE_HZ * t)
    onset = event_time(case) - case.offset_s  # seconds into the audio stream
    a = int(round(onset * case.rate))
    m = int(round(CLICK_S * case.rate))
    if 0 <= a < n:
        x[a:a + m] += CLICK_AMP * np.sin(2 * np.pi * CLICK_HZ * np.arange(min(m, n - a)) / case.rate)
    out = np.zeros((case.channels, n))
    if case.channels == 1:
        out[0] = x
    else:
        out[0] = out[1] = x  # FL, FR
    return out


# --- writing -------------------------------------------------------------------------------
def _sample_data(x: np.ndarray, fmt: str) -> np.ndarray:
    base = fmt.rstrip("p")
    if base == "u8":
        y = np.clip(np.round(x * 128 + 128), 0, 255).astype(np.uint8)
    elif base == "s16":
        y = np.round(x * 32767).astype(np.int16)
    elif base == "s32":
        y = np.round(x * 2147483647.0).astype(np.int32)
    elif base == "flt":
        y = x.astype(np.float32)
    elif base == "dbl":
        y = x.astype(np.float64)
    else:
        raise ValueError(f"sample format {fmt}")
    if not fmt.endswith("p"):
        y = np.ascontiguousarray(y.T).reshape(1, -1)
    return np.ascontiguousarray(y)


def write_case(case: Case, folder: Path) -> Path:
    """Write `case` into `folder`; the video pts start at video_start_s, the audio's at audio_start_s."""
    import av

    path = Path(folder) / case.name
    frames = video_frames(case)
    times = frame_times(case) + case.video_start_s
    with av.open(str(path), mode="w", format=case.fmt) as out:
        tb_v = Fraction(1, int(2 * case.fps.numerator)) / case.fps.denominator if case.vfr else 1 / case.fps
        vs = out.add_stream(case.vcodec, rate=case.fps)
        vs.width, vs.height = case.size[1], case.size[0]
        names = [f.name for f in vs.codec_context.codec.video_formats or []]
        vs.pix_fmt = "yuvj420p" if case.vcodec == "mjpeg" else ("yuv420p" if "yuv420p" in names or not names else names[0])
        vs.codec_context.time_base = tb_v
        vs.codec_context.options = dict(case.vopts)
        streams = [vs]
        audio = None
        if case.acodec:
            codec = av.Codec(case.acodec, "w")
            a_s = out.add_stream(case.acodec, rate=case.rate)
            a_s.codec_context.layout = _LAYOUTS[case.channels]
            fmts = [f.name for f in codec.audio_formats or []]
            # the richest format the encoder takes, so every bit depth is exercised
            for pref in ("dbl", "dblp", "s32", "s32p", "flt", "fltp", "s16", "s16p", "u8"):
                if pref in fmts:
                    a_s.codec_context.format = pref
                    break
            a_s.codec_context.time_base = Fraction(1, case.rate)
            opts = dict(case.aopts)
            if case.acodec in ("vorbis", "opus"):
                opts["strict"] = "-2"
            a_s.codec_context.options = opts
            if case.acodec.startswith("wma"):
                a_s.codec_context.bit_rate = 128000
            a_s.codec_context.open()  # the encoder's frame size is known once it is open
            streams.append(a_s)
            audio = audio_signal(case)
        events = [(float(t), 0, i) for i, t in enumerate(times)]
        if audio is not None:
            size = a_s.codec_context.frame_size or 1024
            for j in range(0, audio.shape[1], size):
                events.append((case.audio_start_s + j / case.rate, 1, j))
        events.sort()
        for t, kind, idx in events:
            if kind == 0:
                f = av.VideoFrame.from_ndarray(frames[idx], format="rgb24").reformat(format=vs.pix_fmt)
                f.pts = int(round(t / tb_v))
                f.time_base = tb_v
                out.mux(vs.encode(f))
            else:
                size = a_s.codec_context.frame_size or 1024
                chunk = audio[:, idx:idx + size]
                if a_s.codec_context.frame_size and chunk.shape[1] < size:
                    chunk = np.pad(chunk, ((0, 0), (0, size - chunk.shape[1])))
                fmt = a_s.codec_context.format.name
                af = av.AudioFrame.from_ndarray(_sample_data(chunk, fmt), format=fmt, layout=_LAYOUTS[case.channels])
                af.sample_rate = case.rate
                af.pts = int(round(case.audio_start_s * case.rate)) + idx
                af.time_base = Fraction(1, case.rate)
                out.mux(a_s.encode(af))
        for s in streams:
            out.mux(s.encode(None))
    if case.strip_avi_index:
        strip_avi_index(path)
    return path


def strip_avi_index(path: Path) -> None:
    """Make an AVI index-free, as a streamed capture is: drop the idx1 chunk and the
    AVIF_HASINDEX / AVIF_MUSTUSEINDEX flags, and fix the RIFF size."""
    data = bytearray(Path(path).read_bytes())
    pos = data.rfind(b"idx1")
    assert pos > 0, f"{path} has no idx1 chunk"
    del data[pos:]
    struct.pack_into("<I", data, 4, len(data) - 8)
    avih = data.find(b"avih")
    flags_at = avih + 8 + 12  # avih: cb, then dwMicroSecPerFrame, dwMaxBytesPerSec, dwPaddingGranularity, dwFlags
    flags = struct.unpack_from("<I", data, flags_at)[0]
    struct.pack_into("<I", data, flags_at, flags & ~0x10 & ~0x20)
    Path(path).write_bytes(bytes(data))


# --- the reference: decode everything from the start, never seek ---------------------------
# mono weights per channel: front pair 1/2 each, centre 1/sqrt(2), surrounds 1/(2 sqrt(2)),
# LFE 0 (ITU-R BS.775 to stereo, as FFmpeg's default matrix, then the mean of left and right)
_REF_WEIGHTS = {"FL": 0.5, "FR": 0.5, "FC": 0.5 ** 0.5, "LFE": 0.0, "BL": 0.5 ** 1.5, "BR": 0.5 ** 1.5,
                "SL": 0.5 ** 1.5, "SR": 0.5 ** 1.5, "BC": 0.5}


@dataclass
class Reference:
    frame_times: np.ndarray  # s from the first video frame
    frames: list  # uint8 [H,W,3]
    audio: np.ndarray | None  # mono float64 at the native rate
    audio_start_s: float  # clip time of audio[0]
    rate: int
    video_tick_s: float  # the container's time base for video
    audio_tick_s: float
    gain: float  # level of the front pair's (or the mono channel's) signal in the mono mix


def _to_float(frame) -> np.ndarray:
    x = frame.to_ndarray()
    c = len(frame.layout.channels)
    if not frame.format.is_planar:
        x = x.reshape(-1, c).T
    scale = {np.dtype(np.uint8): None, np.dtype(np.int16): 32768.0, np.dtype(np.int32): 2147483648.0}
    if x.dtype == np.uint8:
        return (x.astype(np.float64) - 128) / 128
    if x.dtype in scale:
        return x.astype(np.float64) / scale[x.dtype]
    return x.astype(np.float64)


def sequential_decode(path: Path) -> Reference:
    import av

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        a = c.streams.audio[0] if c.streams.audio else None
        times, frames, chunks = [], [], []
        first_audio = None
        gain = 1.0
        for packet in c.demux([s for s in (v, a) if s is not None]):
            try:
                decoded = packet.decode()
            except av.FFmpegError:
                continue
            for f in decoded:
                if packet.stream.type == "video":
                    times.append(float(f.pts * v.time_base))
                    frames.append(f.to_ndarray(format="rgb24"))
                else:
                    if first_audio is None:
                        first_audio = float(f.pts * a.time_base)
                    x = _to_float(f)
                    names = [ch.name for ch in f.layout.channels]
                    if len(names) == 1:
                        w = np.ones(1)
                    elif all(n in _REF_WEIGHTS for n in names):
                        w = np.array([_REF_WEIGHTS[n] for n in names])
                    else:  # channels of no stated order: their mean
                        w = np.full(len(names), 1.0 / len(names))
                    gain = float(w[:2].sum())
                    chunks.append(w @ x)
        order = np.argsort(times, kind="stable")
        t0 = times[order[0]]
        rate = int(a.codec_context.sample_rate) if a is not None else 0
        return Reference(frame_times=np.array(times)[order] - t0, frames=[frames[i] for i in order],
                         audio=np.concatenate(chunks) if chunks else None,
                         audio_start_s=(first_audio - t0) if first_audio is not None else 0.0, rate=rate,
                         video_tick_s=float(v.time_base), audio_tick_s=float(a.time_base) if a is not None else 0.0,
                         gain=gain)


def reference_frames(ref: Reference, times: np.ndarray, *, fps: float) -> np.ndarray:
    """The frame shown at each time (the first frame before it starts, the last after the end).

    A container whose ticks are finer than a frame rounds each pts to a tick, so a frame
    counts as shown at a time up to half a tick before its pts."""
    tol = 0.5 * ref.video_tick_s if ref.video_tick_s < 0.5 / fps else 1e-6
    idx = np.searchsorted(ref.frame_times, np.asarray(times) + tol, side="right") - 1
    return np.stack([ref.frames[max(0, i)] for i in idx])


def reference_audio(ref: Reference, *, start_s: float, duration_s: float) -> tuple[np.ndarray, float]:
    """The reference's mono samples over the span at the native rate, zeros where it has none."""
    n = max(1, int(round(duration_s * ref.rate)))
    out = np.zeros(n)
    covered = np.zeros(n, bool)
    if ref.audio is not None:
        first = int(round((ref.audio_start_s - start_s) * ref.rate))  # span index of audio[0]
        lo, hi = max(0, first), min(n, first + len(ref.audio))
        if hi > lo:
            out[lo:hi] = ref.audio[lo - first:hi - first]
            covered[lo:hi] = True
    return out, float(1 - covered.mean())
