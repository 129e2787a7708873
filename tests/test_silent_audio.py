"""Files whose audio stream exists but gives no sound: named by check-data, counted by the
loader and the trainer, refused under decode_failure=strict."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest
from media_helpers import grey_frames, tiny_cfg, write_clip

from avsf.data import build_dataset, build_loader
from avsf.data.check import scan_dataset
from avsf.data.datasets.base import SilentAudioError
from avsf.data.loader import count_silent
from avsf.engine.train import EpochMeter


def write_mute_stream(path, *, garbage: bool, seconds: float = 3.0):
    """A video with an audio stream that holds no packets (garbage=False: a muxer that never
    got the sound) or only undecodable ones (garbage=True)."""
    import av

    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=25)
        vs.width, vs.height, vs.pix_fmt = 48, 32, "yuv420p"
        a = out.add_stream("aac", rate=16000)
        a.codec_context.layout, a.codec_context.format = "mono", "fltp"
        for i, f in enumerate(grey_frames(seconds=seconds, fps=25)):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts, vf.time_base = i, Fraction(1, 25)
            out.mux(vs.encode(vf))
            if garbage and i % 2 == 0:
                pk = av.Packet(bytes(np.random.default_rng(i).integers(0, 256, 300, dtype=np.uint8)))
                pk.stream, pk.time_base = a, Fraction(1, 16000)
                pk.pts = pk.dts = int(i / 25 * 16000)
                out.mux(pk)
        out.mux(vs.encode(None))
    return path


@pytest.fixture(scope="module")
def mute_root(tmp_path_factory):
    """A Kinetics-format set: two good files, one with an empty audio stream, one with
    undecodable audio, and one with audio for its first 0.5 s only."""
    root = tmp_path_factory.mktemp("mute")
    for k in range(2):
        write_clip(root / f"good_{k}.mp4", seconds=3.0, noise=0.2, burst_at=None, seed=k)
    write_mute_stream(root / "empty_audio.mkv", garbage=False)
    write_mute_stream(root / "bad_audio.mkv", garbage=True)
    write_clip(root / "short_audio.mp4", seconds=3.0, audio_seconds=0.5, noise=0.2, burst_at=None)
    names = ["good_0.mp4", "good_1.mp4", "empty_audio.mkv", "bad_audio.mkv", "short_audio.mp4"]
    for split in ("train", "val", "test"):
        (root / f"{split}.csv").write_text("".join(f"{n} {i % 2}\n" for i, n in enumerate(names)))
    (root / "classnames.json").write_text(json.dumps({"a": 0, "b": 1}))
    return root


def test_check_data_names_files_whose_audio_stream_gives_no_sound(mute_root):
    report = scan_dataset(dataset="kinetics", root=str(mute_root), split_file=str(mute_root / "train.csv"))
    no_sound = {d["path"].rsplit("/", 1)[-1]: d["reason"] for d in report.files["no_sound"]}
    assert set(no_sound) == {"empty_audio.mkv", "bad_audio.mkv"}
    assert "decodes no frame" in no_sound["empty_audio.mkv"]
    assert "Invalid data" in no_sound["bad_audio.mkv"]
    # neither is counted as a file without audio: the stream is there, its sound is not
    assert not report.files["no_audio"] and report.counts()["no_sound"] == 2
    assert report.ok == 3  # the short-audio file has sound at the first clip time


def test_loader_counts_clips_with_no_sound_and_strict_raises(mute_root):
    cfg = tiny_cfg(mute_root, preset="audio_only_tiny")
    ds = build_dataset(cfg, "test")  # deterministic clip times
    loader = build_loader(ds, batch_size=4, num_workers=0, shuffle=False, seed=0, epoch=0, drop_last=False)
    batches = list(loader)
    pads = {}
    for b in batches:
        for v, pad, has in zip(b["video_index"].tolist(), b["audio_pad"].tolist(), b["has_audio"].tolist()):
            pads.setdefault(ds.records[v].path.rsplit("/", 1)[-1], []).append((pad, has))
    silent_files = {name for name, v in pads.items() if all(p >= 1.0 and h for p, h in v)}
    # the undecodable audio is a decode failure (the sample is replaced); the empty stream and
    # clips past the short audio's end are silence, counted
    assert "empty_audio.mkv" in silent_files
    expected = sum(1 for v in pads.values() for p, h in v if p >= 1.0 and h)
    assert expected >= ds.views and loader.silent_clips == expected
    assert sum(count_silent(b) for b in batches) == expected
    strict = build_dataset(tiny_cfg(mute_root, preset="audio_only_tiny", overrides=["data.decode_failure=strict"]),
                           "test")
    with pytest.raises(SilentAudioError, match="no samples at .*silent_clips"):
        list(build_loader(strict, batch_size=4, num_workers=0, shuffle=False, seed=0, epoch=0, drop_last=False))


def test_the_epoch_record_carries_silent_clips():
    meter = EpochMeter()
    meter.silent_clips = 3
    assert meter.summary()["silent_clips"] == 3
    assert count_silent({"audio": np.zeros((2, 1)), "audio_pad": np.array([1.0, 1.0]),
                         "has_audio": np.array([True, False])}) == 1
    assert count_silent({"audio_pad": np.array([1.0]), "has_audio": np.array([True])}) == 0  # no audio wanted
