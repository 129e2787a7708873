"""Decoding: every container and codec, frame timing, A/V sync, seeking, broken files."""

from __future__ import annotations

import numpy as np
import pytest
from media_helpers import LEVELS, level_index, write_clip

from avsf.data import decode as D
from avsf.data.synthetic.media import write_media
from avsf.errors import UserError

# (file name, video codec, audio codec, fps, sample rate, channels)
FORMATS = [
    ("h264_aac.mp4", "libx264", "aac", 30.0, 44100, 2),
    ("vp8_vorbis.webm", "libvpx", "vorbis", 25.0, 44100, 2),
    ("vp9_opus.webm", "libvpx-vp9", "libopus", 30.0, 48000, 6),
    ("mjpeg_pcm.avi", "mjpeg", "pcm_s16le", 29.97, 22050, 1),
    ("h264_flac.mkv", "libx264", "flac", 24.0, 16000, 2),
    ("mpeg2_mp2.mpg", "mpeg2video", "mp2", 25.0, 32000, 2),
    ("mpeg4_mp3.mkv", "mpeg4", "libmp3lame", 15.0, 44100, 1),
]


@pytest.mark.parametrize("name,vcodec,acodec,fps,rate,channels", FORMATS, ids=[f[0] for f in FORMATS])
def test_every_format_decodes_in_sync(tmp_path, name, vcodec, acodec, fps, rate, channels):
    path = write_clip(tmp_path / name, seconds=2.0, fps=fps, sample_rate=rate, channels=channels,
                      video_codec=vcodec, audio_codec=acodec, burst_at=0.9)
    info = D.probe(path)
    assert info.has_video and info.has_audio
    assert info.fps == pytest.approx(fps, rel=1e-3)
    assert info.sample_rate == rate and info.channels == channels
    assert info.duration_s == pytest.approx(2.0, abs=0.3)
    assert info.num_frames == pytest.approx(2.0 * fps, abs=2)

    start, span, n = 0.5, 1.0, 8
    clip = D.decode_clip(path, start_s=start, duration_s=span, num_frames=n, audio_rate=16000)
    assert clip.frames.shape == (n, 32, 48, 3) and clip.frames.dtype == np.uint8
    # frame k is the one shown at start + k * span / n
    expected = [int(np.floor((start + k * span / n) * fps + 1e-6)) % LEVELS for k in range(n)]
    got = [level_index(f.mean()) for f in clip.frames]
    assert got == expected
    # audio: exactly the span, at 16 kHz, mono; the burst at 0.9 s lands 0.4 s into the span
    assert clip.audio.shape == (16000,)
    onset = np.argmax(np.abs(clip.audio) > 0.2) / 16000
    assert onset == pytest.approx(0.4, abs=0.004)
    assert clip.audio_pad == 0.0


def test_clip_past_the_end_repeats_last_frame_and_pads_audio(tmp_path):
    path = write_clip(tmp_path / "short.mp4", seconds=1.0, fps=30, burst_at=None, noise=0.3)
    clip = D.decode_clip(path, start_s=0.5, duration_s=1.0, num_frames=10, audio_rate=16000)
    last = level_index(clip.frames[-1].mean())
    assert last == 29 % LEVELS  # the file's last frame
    # half of the span is past the audio's end: zeros there, recorded as padding
    assert clip.audio_pad == pytest.approx(0.5, abs=0.05)
    assert np.abs(clip.audio[-4000:]).max() == 0.0
    assert np.abs(clip.audio[:4000]).max() > 0.05


def test_audio_shorter_than_video_is_padded(tmp_path):
    path = write_clip(tmp_path / "a.mkv", seconds=3.0, audio_seconds=1.0, video_codec="libx264", audio_codec="flac",
                      burst_at=None, noise=0.3)
    clip = D.decode_clip(path, start_s=0.5, duration_s=1.0, num_frames=4, audio_rate=16000)
    assert clip.audio_pad == pytest.approx(0.5, abs=0.05)


def test_no_audio_stream(tmp_path):
    path = write_clip(tmp_path / "silent.mp4", audio=False)
    info = D.probe(path)
    assert info.has_video and not info.has_audio and info.channels == 0
    clip = D.decode_clip(path, start_s=0.0, duration_s=1.0, num_frames=4, audio_rate=16000)
    assert clip.audio is None and not clip.has_audio


def test_seek_decodes_only_what_the_clip_needs(tmp_path, monkeypatch):
    # 10 s at 30 fps with a keyframe every 15 frames; a clip at the end must not decode the start
    path = write_clip(tmp_path / "long.mp4", seconds=10.0, fps=30, audio=False, options={"g": "15"})
    decoded = []
    original = D.decode_tolerant

    def counting(container, stream, **kw):
        for frame in original(container, stream, **kw):
            decoded.append(frame.pts)
            yield frame

    monkeypatch.setattr(D, "decode_tolerant", counting)
    clip = D.decode_clip(path, start_s=8.5, duration_s=1.0, num_frames=8, audio_rate=16000, want_audio=False)
    assert [level_index(f.mean()) for f in clip.frames][0] == int(8.5 * 30) % LEVELS
    # at most one GOP before the clip plus the clip itself
    assert len(decoded) <= 15 + 31 + 2


def test_missing_empty_and_garbage_files_raise_clear_errors(tmp_path):
    with pytest.raises(D.DecodeError, match="file not found"):
        D.probe(tmp_path / "nope.mp4")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(D.DecodeError, match="zero-length"):
        D.probe(empty)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(D.DecodeError, match="garbage.mp4"):
        D.probe(garbage)


def test_truncated_tail_keeps_what_decodes(tmp_path):
    path = write_clip(tmp_path / "cut.mkv", seconds=4.0, fps=30, audio=False)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    clip = D.decode_clip(path, start_s=0.2, duration_s=0.5, num_frames=4, audio_rate=16000, want_audio=False)
    assert [level_index(f.mean()) for f in clip.frames] == [int((0.2 + k * 0.125) * 30 + 1e-6) % LEVELS for k in range(4)]


def test_audio_only_file(tmp_path):
    path = write_clip(tmp_path / "sound.m4a", video=False, burst_at=0.3)
    info = D.probe(path)
    assert not info.has_video and info.has_audio
    clip = D.decode_clip(path, start_s=0.0, duration_s=1.0, num_frames=1, audio_rate=16000, want_video=False)
    assert np.argmax(np.abs(clip.audio) > 0.2) / 16000 == pytest.approx(0.3, abs=0.004)


def test_write_media_is_deterministic_and_checks_input(tmp_path):
    a = write_clip(tmp_path / "a.mp4", noise=0.1)
    b = write_clip(tmp_path / "b.mp4", noise=0.1)
    assert a.read_bytes() == b.read_bytes()
    with pytest.raises(UserError, match="neither"):
        write_media(tmp_path / "x.mp4", frames=None, fps=30, audio=None, sample_rate=16000)
    with pytest.raises(UserError, match="even frame size"):
        write_media(tmp_path / "x.mp4", frames=np.zeros((2, 31, 32, 3), np.uint8), fps=30, audio=None, sample_rate=0)
    with pytest.raises(UserError, match="cannot encode at 44100"):
        write_media(tmp_path / "x.webm", frames=None, fps=30, audio=np.zeros((1, 100), np.float32),
                    sample_rate=44100, audio_codec="libopus")
