"""The built-in synthetic dataset: layout, media, determinism, design cues, spoken words,
generation safety, and the probe checks that sight and sound are complementary and that sound
is the easier modality to fit and to overfit (the paper's Fig. 3)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import av
import numpy as np
import pytest

from avsf.data.synthetic import dataset, sounds, visuals
from avsf.data.synthetic import CLASSES, SCALES, ScaleSpec, ensure_synthetic, generate_dataset, render_clip
from avsf.errors import UserError

SMOKE = SCALES["smoke"]
TINY = ScaleSpec("tiny", 48, 48, 30.0, 1.2, 1.5, 16000, 1, {"train": 1, "val": 1, "test": 1})


def _read_csv(path: Path) -> list[tuple[str, int]]:
    rows = []
    for line in path.read_text().splitlines():
        rel, label = line.split(" ")
        rows.append((rel, int(label)))
    return rows


def _centroids(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sprite centre (y, x) per frame from the bright foreground. Two [T] arrays."""
    mask = frames.max(axis=-1) > 0.65 * 255
    area = np.maximum(mask.sum(axis=(1, 2)), 1)
    ys = (mask * np.arange(frames.shape[1])[None, :, None]).sum(axis=(1, 2)) / area
    xs = (mask * np.arange(frames.shape[2])[None, None, :]).sum(axis=(1, 2)) / area
    return ys, xs


def _find_clip(*, label: int, split: str = "train", **want) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """The first smoke clip of `label` whose metadata matches `want` (a callable or a value per key)."""
    for index in range(200):
        frames, audio, meta = render_clip(spec=SMOKE, seed=0, split=split, label=label, index=index)
        if all(v(meta[k]) if callable(v) else meta[k] == v for k, v in want.items()):
            return frames, audio, meta
    raise AssertionError(f"no clip of class {label} with {want}")


# --- layout of the generated dataset ----------------------------------------------------------
def test_layout_counts_and_manifest(smoke_root):
    names = json.loads((smoke_root / "classnames.json").read_text())
    assert names == {c.name: i for i, c in enumerate(CLASSES)} and len(names) == 20
    manifest = json.loads((smoke_root / "manifest.json").read_text())
    assert manifest["scale"] == "smoke" and manifest["seed"] == 0
    assert manifest["generator_version"] == dataset.GENERATOR_VERSION
    assert {c["cue"] for c in manifest["classes"]} == {"sound", "motion", "appearance", "visual", "joint"}
    by_path = {c["path"]: c for c in manifest["clips"]}
    # held-out splits that resolve: one test clip is 0.1 point (binomial SE ~1.5 points at 50 %)
    assert len(_read_csv(smoke_root / "test.csv")) >= 1000 and len(_read_csv(smoke_root / "val.csv")) >= 400
    for split in ("train", "val", "test"):
        rows = _read_csv(smoke_root / f"{split}.csv")
        assert len(rows) == 20 * SMOKE.clips_per_class[split]
        assert np.bincount([label for _, label in rows], minlength=20).tolist() == [SMOKE.clips_per_class[split]] * 20
        for rel, label in rows:
            assert (smoke_root / rel).is_file() and rel.startswith(f"{split}/")
            assert by_path[rel]["label"] == label
    clips = manifest["clips"]
    no_audio = sum(not c["has_audio"] for c in clips) / len(clips)
    offset = sum(bool(c["offset_s"]) for c in clips) / len(clips)
    background = sum(bool(c["background"]) for c in clips) / len(clips)
    assert 0.02 < no_audio < 0.16, no_audio
    assert 0.15 < offset < 0.45 and max(abs(c["offset_s"] or 0) for c in clips) <= SMOKE.max_offset
    assert 0.2 < background < 0.5, background
    # the shift: training clips hear training backgrounds only, val/test clips the others
    bgs = {s: {c["background"] for c in clips if c["split"] == s and c["background"]} for s in ("train", "test")}
    assert bgs["train"] <= set(sounds.TRAIN_BACKGROUNDS) and bgs["test"] <= set(sounds.HELDOUT_BACKGROUNDS)
    # and spoken words by the training speakers only, val/test by the held-out ones
    speakers = {s: {c["speaker"] for c in clips if c["split"] == s and c["speaker"]} for s in ("train", "val", "test")}
    assert speakers["train"] == set(sounds.TRAIN_SPEAKERS)
    assert speakers["val"] | speakers["test"] == set(sounds.HELDOUT_SPEAKERS)
    assert manifest["knobs"]["words"] == list(sounds.WORDS)


def test_media_are_h264_aac_mp4s_with_and_without_audio(smoke_root):
    manifest = json.loads((smoke_root / "manifest.json").read_text())
    with_audio = next(c for c in manifest["clips"] if c["has_audio"])
    without = next(c for c in manifest["clips"] if not c["has_audio"])
    with av.open(str(smoke_root / with_audio["path"])) as f:
        v = f.streams.video[0]
        assert v.codec_context.name == "h264" and (v.width, v.height) == (SMOKE.width, SMOKE.height)
        assert float(v.average_rate) == SMOKE.fps
        assert f.streams.audio[0].codec_context.name == "aac" and f.streams.audio[0].rate == SMOKE.sample_rate
        frames = sum(1 for _ in f.decode(video=0))
        assert frames == with_audio["num_frames"]
        assert SMOKE.min_duration <= frames / SMOKE.fps <= SMOKE.max_duration
    with av.open(str(smoke_root / without["path"])) as f:
        assert len(f.streams.audio) == 0 and len(f.streams.video) == 1


# --- determinism --------------------------------------------------------------------------------
def test_same_seed_same_bytes_other_seed_other_content(smoke_root, tmp_path):
    for split, label, index in (("train", 3, 0), ("val", 12, 1), ("test", 19, 2)):
        meta = dataset.write_clip(tmp_path, spec=SMOKE, seed=0, split=split, label=label, index=index)
        assert (tmp_path / meta["path"]).read_bytes() == (smoke_root / meta["path"]).read_bytes()
    a, _, _ = render_clip(spec=SMOKE, seed=0, split="train", label=3, index=0)
    b, _, _ = render_clip(spec=SMOKE, seed=1, split="train", label=3, index=0)
    assert a.shape != b.shape or not np.array_equal(a, b)


def test_worker_count_does_not_change_the_dataset(tmp_path):
    one = generate_dataset(tmp_path / "one", spec=TINY, seed=5, workers=1)
    two = generate_dataset(tmp_path / "two", spec=TINY, seed=5, workers=2)
    for name in ("train.csv", "val.csv", "test.csv", "classnames.json"):
        assert (one / name).read_text() == (two / name).read_text()
    for rel, _ in _read_csv(one / "test.csv"):
        assert (one / rel).read_bytes() == (two / rel).read_bytes()


# --- the design: which cue tells each class apart -------------------------------------------------
def test_class_table_isolates_each_cue():
    groups: dict[str, list] = {}
    for c in CLASSES:
        groups.setdefault(c.cue, []).append(c)
    def distinct(cs, attr):
        return len({getattr(c, attr) for c in cs})
    sound, motion, look, visual, joint = (groups[k] for k in ("sound", "motion", "appearance", "visual", "joint"))
    assert distinct(sound, "digit") == distinct(sound, "motion") == 1 and distinct(sound, "sound") == len(sound)
    assert distinct(motion, "digit") == distinct(motion, "sound") == 1 and distinct(motion, "motion") == len(motion)
    assert distinct(look, "motion") == distinct(look, "sound") == 1 and distinct(look, "digit") == len(look)
    assert all(c.sound == "random" for c in visual) and len({(c.digit, c.motion) for c in visual}) == len(visual)
    assert distinct(joint, "digit") == 2 and distinct(joint, "sound") == 2 and len({(c.digit, c.sound) for c in joint}) == 4


def _onsets(audio: np.ndarray, *, level: float, bin_s: float = 0.005, quiet_s: float = 0.04) -> np.ndarray:
    """Times (s) where the envelope (peak per 5 ms) rises above `level` x its maximum after
    staying below it for `quiet_s`: the starts of sounds, even where one's tail runs into the next."""
    step = int(bin_s * SMOKE.sample_rate)
    env = np.abs(audio[: audio.size // step * step]).reshape(-1, step).max(1)
    loud = env > level * env.max()
    quiet = int(quiet_s / bin_s)
    starts = [i for i in range(quiet, loud.size) if loud[i] and not loud[i - quiet:i].any()]
    return np.asarray(starts) * bin_s


@pytest.mark.parametrize("sound, onset_level", [("bell", 0.5), ("word:push", 0.3)])
def test_event_sounds_land_on_their_visual_cause_or_at_the_offset(sound, onset_level):
    label = next(i for i, c in enumerate(CLASSES) if c.sound == sound)
    for want_offset in (lambda o: o == 0.0, lambda o: o is not None and abs(o) >= 0.2):
        frames, audio, meta = _find_clip(label=label, has_audio=True, background="", offset_s=want_offset)
        ys, _ = _centroids(frames)
        # a landing: the lowest point (largest y) right after the fast fall
        landings = np.array([i for i in range(1, len(ys) - 1) if ys[i] > ys[i - 1] + 0.5 and ys[i] >= ys[i + 1]])
        landings_s = landings / SMOKE.fps
        onsets = _onsets(audio[0], level=onset_level)
        heard = landings_s + meta["offset_s"]  # where the sounds should start
        # onsets between the first and the last landing seen (a clip may start mid-bounce)
        lo, hi = max(0.1, heard.min() - 0.1), min(len(ys) / SMOKE.fps - 0.1, heard.max() + 0.1)
        inside = onsets[(onsets > lo) & (onsets < hi)]
        assert len(inside) >= 2 and len(landings_s) >= 2
        gaps = [np.min(np.abs(landings_s + meta["offset_s"] - t)) for t in inside]
        assert max(gaps) < 1.6 / SMOKE.fps, (meta, gaps)


def test_every_model_window_holds_an_event():
    window = int(32 / SMOKE.fps * SMOKE.sample_rate)  # Slow 4 x tau 8 frames at 30 fps
    for label, c in enumerate(CLASSES):
        if c.sound in ("random", "hum"):
            continue
        _, audio, meta = _find_clip(label=label, has_audio=True, background="")
        env = np.abs(audio[0])
        peaks = [env[s:s + window].max() for s in range(0, env.size - window, window // 4)]
        assert min(peaks) > 0.3 * env.max(), (c.name, meta)


def test_shaking_is_visible_to_the_fast_pathway_only():
    label = next(i for i, c in enumerate(CLASSES) if c.name == "one shaking")
    frames, _, _ = render_clip(spec=SMOKE, seed=0, split="train", label=label, index=0)
    _, xs = _centroids(frames)
    slow = xs[0:32:8]  # every 8th frame: what the Slow pathway sees
    fast = xs[0:32:2]  # every 2nd frame: the Fast pathway
    assert np.ptp(slow) < 0.5 and np.ptp(fast) > 3.0


def test_heldout_splits_use_other_voices_and_digit_instances():
    assert not set(sounds.TRAIN_VOICES) & set(sounds.HELDOUT_VOICES)
    assert not set(sounds.TRAIN_SPEAKERS) & set(sounds.HELDOUT_SPEAKERS)
    assert not set(sounds.TRAIN_BACKGROUNDS) & set(sounds.HELDOUT_BACKGROUNDS)
    for digit in range(10):
        train = set(visuals.digit_pool(digit=digit, heldout=False))
        held = set(visuals.digit_pool(digit=digit, heldout=True))
        assert train and held and not train & held and len(train | held) == 500


# --- spoken words -------------------------------------------------------------------------------
def test_spoken_words_are_deterministic_across_processes_and_differ_by_speaker():
    from avsf.data.synthetic import speech

    speakers = sounds.TRAIN_SPEAKERS + sounds.HELDOUT_SPEAKERS
    speech.word_bank.cache_clear()
    first = speech.word_bank(sounds.WORDS, speakers)  # each call: a fresh interpreter
    speech.word_bank.cache_clear()
    second = speech.word_bank(sounds.WORDS, speakers)
    assert first.keys() == second.keys() and all(np.array_equal(first[k], second[k]) for k in first)
    for word in sounds.WORDS:
        takes = [first[(speaker, word)] for speaker in speakers]
        assert all(0.2 < x.size / speech.ENGINE_RATE < 0.6 for x in takes)  # fits between events
        assert len({x.tobytes() for x in takes}) == len(speakers)
    # resampled to the clip's rate, a few percent faster or slower from clip to clip
    rng = np.random.default_rng(0)
    x = sounds.spoken(word="open", sr=16000, speaker="en+m1", rng=rng)
    assert x.dtype == np.float32 and abs(x.size / (first[("en+m1", "open")].size * 16000 / 22050) - 1) < 0.04


# --- generation safety ------------------------------------------------------------------------------
def test_unknown_scale_and_bad_seed_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="smoke, small"):
        ensure_synthetic(tmp_path, "huge", 0)
    with pytest.raises(UserError, match="non-negative"):
        ensure_synthetic(tmp_path, "smoke", -1)


def test_interrupted_generation_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    real = dataset.write_clip
    calls = []

    def flaky(*args, **kw):
        calls.append(1)
        if len(calls) > 5:
            raise RuntimeError("disk full")
        return real(*args, **kw)

    monkeypatch.setattr(dataset, "write_clip", flaky)
    with pytest.raises(RuntimeError, match="disk full"):
        generate_dataset(tmp_path / "data", spec=TINY, seed=0, workers=1)
    assert list(tmp_path.iterdir()) == []  # neither the dataset nor its temp folder


def test_concurrent_callers_generate_once_and_stale_versions_regenerate(tmp_path, monkeypatch):
    monkeypatch.setitem(SCALES, "tiny", TINY)
    real = dataset.generate_dataset
    generated = []

    def counting(*args, **kw):
        generated.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(dataset, "generate_dataset", counting)
    results = []
    threads = [threading.Thread(target=lambda: results.append(ensure_synthetic(tmp_path, "tiny", 0, workers=1)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(generated) == 1 and results[0] == results[1] == tmp_path / "tiny-seed0"
    # a copy from another generator version is replaced
    manifest_path = results[0] / "manifest.json"
    stale = json.loads(manifest_path.read_text())
    stale["generator_version"] = dataset.GENERATOR_VERSION - 1
    manifest_path.write_text(json.dumps(stale))
    ensure_synthetic(tmp_path, "tiny", 0, workers=1)
    assert len(generated) == 2
    assert json.loads(manifest_path.read_text())["generator_version"] == dataset.GENERATOR_VERSION
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["tiny-seed0"]


def test_cli_reports_bad_scale_and_refuses_foreign_folders(tmp_path, capsys, smoke_root):
    from avsf.cli import main

    assert main(["synth", "--out", str(tmp_path / "x"), "--scale", "huge"]) == 2
    assert "choose one of smoke, small" in capsys.readouterr().err
    (tmp_path / "mine.txt").write_text("keep me")
    assert main(["synth", "--out", str(tmp_path), "--scale", "smoke", "--force"]) == 2
    assert "refusing to replace" in capsys.readouterr().err and (tmp_path / "mine.txt").exists()
    assert main(["synth", "--out", str(smoke_root), "--scale", "smoke"]) == 0
    assert "already holds" in capsys.readouterr().out


# --- the point of the dataset: sight and sound are complementary; sound overfits ---------------------
@pytest.fixture(scope="module")
def smoke_features(smoke_root):
    """Probe features of the smoke train, val and test splits, extracted once for the probe tests."""
    import torch

    from avsf.data.synthetic.probes import split_features

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield {split: split_features(smoke_root, split) for split in ("train", "val", "test")}
    finally:
        torch.set_num_threads(threads)


def test_probes_both_beat_visual_and_audio_alone(smoke_features, one_torch_thread):
    from avsf.data.synthetic.probes import probe_features

    result = probe_features(smoke_features["train"], smoke_features["test"])
    visual, audio, both = (result[k]["test_top1"] for k in ("visual", "audio", "both"))
    print("probe top-1 (train, test):", json.dumps({k: [round(result[k][s], 3) for s in ("train_top1", "test_top1")]
                                                    for k in result}))
    assert both > max(visual, audio) + 0.10, result
    # each cue is carried by the modality the design says
    per_cue = {k: result[k]["test_top1_per_cue"] for k in result}
    assert per_cue["audio"]["sound"] > per_cue["visual"]["sound"] + 0.2
    assert per_cue["visual"]["motion"] > per_cue["audio"]["motion"] + 0.3
    assert per_cue["both"]["joint"] > max(per_cue["visual"]["joint"], per_cue["audio"]["joint"])


def test_sound_fits_faster_and_overfits_more_than_sight(smoke_features, one_torch_thread):
    """Fig. 3 in miniature: each modality probed on the classes it alone decides (audio: which
    word is spoken; vision: motion, digit, the visual classes): after one epoch the audio probe
    fits its training clips better, and at the end its train-heldout gap (other speakers) is
    the larger one. Held out: val and test together (the same held-out sources)."""
    from avsf.data.synthetic.probes import learning_curves

    heldout = {k: np.concatenate([smoke_features["val"][k], smoke_features["test"][k]]) for k in smoke_features["test"]}
    curves = learning_curves(smoke_features["train"], heldout, epochs=8)
    audio, visual = curves["audio"], curves["visual"]
    print("learning curves:", json.dumps({k: {s: [round(x, 2) for x in v[s]] for s in ("train_top1", "test_top1")}
                                          for k, v in curves.items()}))
    assert audio["train_top1"][0] > visual["train_top1"][0] + 0.03
    assert audio["train_top1"][-1] >= 0.95 and visual["train_top1"][-1] >= 0.9  # both fit, eventually
    assert audio["gap"] > visual["gap"] + 0.04
    assert audio["test_top1"][-1] > 0.5  # overfit, but it still learned the words (chance: 0.25)


def test_shared_work_comes_back_in_share_order_and_a_failing_worker_is_named(tmp_path):
    from media_helpers import write_clip

    from avsf.data.synthetic.views import CHARADES_FPS
    from avsf.data.synthetic.workers import run_shared

    task = "avsf.data.synthetic.views:extract_charades_frames"
    clips = [str(write_clip(tmp_path / f"c{k}.mp4", seconds=0.5 + 0.5 * k, audio=False)) for k in range(3)]
    jobs = [(c, str(tmp_path / "frames" / f"c{k}")) for k, c in enumerate(clips)]
    done = run_shared(task, jobs, kwargs={}, workers=2, work=tmp_path / ".work")
    # share 0 (jobs 0 and 2) here, share 1 (job 1) in a fresh interpreter; its tuple came back as a list
    assert [tuple(d) for d in done] == [(jobs[k][1], int((0.5 + 0.5 * k) * CHARADES_FPS)) for k in (0, 2, 1)]
    assert not (tmp_path / ".work").exists()
    bad = [(clips[0], str(tmp_path / "again" / "a")), (str(tmp_path / "missing.mp4"), str(tmp_path / "again" / "b"))]
    with pytest.raises(RuntimeError, match=r"(?s)a worker of avsf.data.synthetic.views:extract_charades_frames "
                                           r"failed \(exit 1\): .*missing\.mp4"):
        run_shared(task, bad, kwargs={}, workers=2, work=tmp_path / ".work2")
