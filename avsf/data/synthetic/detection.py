"""The built-in AVA-format detection dataset: several actors (MNIST-digit sprites) per video,
each with a person box at every keyframe (1 fps) and one or two actions.

``ensure_synthetic_ava(root, scale, seed)`` writes, on first use (deterministic from the seed,
under a file lock, atomically), the folder ``root/ava-<scale>-seed<seed>`` in the layout of
:mod:`avsf.data.datasets.ava` (AVA v2.2 names)::

    videos/<video_id>.mp4                      h264 + AAC; file time 0 = movie second 900
    annotations/ava_{train,val}_v2.2.csv       ground-truth boxes and actions
    annotations/ava_{train,val}_predicted_boxes.csv   person proposals with scores
    annotations/ava_{train,val}_excluded_timestamps_v2.2.csv
    annotations/ava_action_list_v2.2_for_activitynet_2019.pbtxt   the label map (6 classes)
    manifest.json                              scale, seed, version, actions, per-video actors

Actions (the label map's ids 1..6), each a cue the paper cares about:

- ``hop + knock`` / ``hop + ring``: the actor hops; the two look identical and differ only by
  the sound at each landing (knock vs bell). One actor per video hops, so the clip's sound
  names the hopper's action: only a model that hears can tell them apart (AVA's "sound"
  classes, e.g. "hit (an object)", "shoot");
- ``shake``: a horizontal 8-frame-period jitter (a Slow pathway sampling every 8th frame sees
  it still; the Fast pathway sees it);
- ``rise``: steady upward travel; ``stand``: no motion;
- ``hold a seven``: appearance, multi-label: the actor is the digit 7 (whatever it does).

Proposals: each ground-truth box jittered (s.d. 3 % of the frame) with a score in
[0.85, 1], a few missed (5 %), plus false positives (random boxes, scores 0.5-0.95: some
above the 0.8 threshold); all from the seed. Excluded timestamps: one keyframe of every third
video. Val clips use held-out digit instances and voices.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from avsf.data.synthetic import checksums
from avsf.data.synthetic import sounds
from avsf.data.synthetic import visuals
from avsf.data.synthetic.dataset import generate_once, swap_in
from avsf.errors import UserError

GENERATOR_VERSION = 2  # bump whenever the generated content changes: cached copies regenerate (2: x264 without MB-tree)
TIME_OFFSET = 900  # movie second at file time 0 (as AVA's 15-minute cuts; data.ava_time_offset)
SPLITS = ("train", "val")
ACTIONS = ("hop + knock", "hop + ring", "shake", "rise", "stand", "hold a seven")
CUES = {"hop + knock": "sound", "hop + ring": "sound", "shake": "motion (fast)", "rise": "motion",
        "stand": "motion (none)", "hold a seven": "appearance"}
MOTION_ACTIONS = ("shake", "rise", "stand")
OTHER_DIGITS = (0, 1, 2, 3, 4, 5, 6, 8, 9)


@dataclass(frozen=True)
class DetScale:
    name: str
    height: int
    width: int
    fps: float
    duration: int  # seconds per video (keyframes at 1 .. duration-1)
    sample_rate: int
    videos: dict  # split -> number of videos
    crf: int = 20


SCALES = {
    "smoke": DetScale("smoke", 64, 80, 30.0, 6, 16000, {"train": 16, "val": 6}),
    "small": DetScale("small", 128, 160, 30.0, 10, 16000, {"train": 80, "val": 20}),
}


def _label_map() -> str:
    return "".join(f'item {{\n  name: "{name}"\n  id: {i}\n}}\n' for i, name in enumerate(ACTIONS, start=1))


def render_video(*, spec: DetScale, seed: int, split: str, index: int) -> dict:
    """Frames uint8 [T,H,W,3], audio float32 [1,S], and per-actor boxes/actions of one video."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xA7A, SPLITS.index(split), index]))
    h, w, fps = spec.height, spec.width, spec.fps
    n = int(spec.duration * fps)
    t = np.arange(n) / fps
    heldout = split != "train"
    images, _ = visuals.load_digits()
    num_actors = int(rng.integers(2, 4))
    lanes = (np.arange(num_actors) + 0.5) * w / num_actors + rng.uniform(-0.04, 0.04, num_actors) * w
    hopper = int(rng.integers(num_actors))
    hop_action = ACTIONS[int(rng.integers(2))]
    events = []
    prev = -rng.uniform(0.0, 0.9)
    while prev < spec.duration + 1.0:
        events.append(prev)
        prev += rng.uniform(0.5, 0.9)
    events = np.asarray(events)
    actors, layers = [], []
    for a in range(num_actors):
        sprite = int(round(0.32 * h * rng.uniform(0.9, 1.1)))
        stage = visuals.Stage(height=h, width=w, x0=float(lanes[a]), top=h * rng.uniform(0.25, 0.32),
                              floor=h * rng.uniform(0.66, 0.74), sprite=sprite)
        action = hop_action if a == hopper else str(rng.choice(MOTION_ACTIONS))
        if action.startswith("hop"):
            x, y, scale = visuals.trajectory(motion="hop", t=t, events=events, stage=stage, rng=rng)
        elif action == "stand":
            x, y, scale = np.full(n, stage.x0), np.full(n, (stage.top + stage.floor) / 2), np.ones(n)
        else:
            x, y, scale = visuals.trajectory(motion=action, t=t, events=events, stage=stage, rng=rng)
        seven = bool(rng.random() < 0.3)
        digit = 7 if seven else int(rng.choice(OTHER_DIGITS))
        layers.append({"image": images[rng.choice(visuals.digit_pool(digit=digit, heldout=heldout))],
                       "color": visuals.sprite_color(rng), "size": sprite, "x": x, "y": y, "scale": scale})
        actors.append({"action": action, "digit": digit, "x": x, "y": y, "size": sprite * scale,
                       "actions": [ACTIONS.index(action) + 1] + ([ACTIONS.index("hold a seven") + 1] if seven else [])})
    frames = visuals.render(stage=visuals.Stage(h, w, w / 2, 0, h, 1), num_frames=n,
                            background=visuals.make_background(height=h, width=w, rng=rng), layers=layers)
    # the sound: the hopper's landings (knock or bell), plus class-irrelevant background sound
    sr = spec.sample_rate
    pool = sounds.TRAIN_VOICES if split == "train" else sounds.HELDOUT_VOICES
    v = pool[int(rng.integers(len(pool)))]
    voice = sounds.Voice(v.pitch * rng.uniform(0.97, 1.03), v.decay * rng.uniform(0.9, 1.1), v.bright)
    track = np.zeros(int(round(spec.duration * sr)))
    snd = (sounds.knock if hop_action == "hop + knock" else sounds.bell)(sr=sr, voice=voice, rng=rng)
    sounds.place_events(track=track, sound=snd, times=events, sr=sr)
    kinds = sounds.TRAIN_BACKGROUNDS if split == "train" else sounds.HELDOUT_BACKGROUNDS
    track += rng.uniform(0.02, 0.08) * sounds.background(kind=str(rng.choice(kinds)), duration=spec.duration,
                                                          sr=sr, rng=rng)
    audio = np.clip(track * 10 ** (rng.uniform(-4, 2) / 20), -1, 1).astype(np.float32)[None]
    # boxes at the keyframes (whole seconds 1 .. duration-1 of the file)
    video_id = f"{split}{index:03d}"
    gt, props = [], []
    for sec in range(1, spec.duration):
        k = min(int(round(sec * fps)), n - 1)
        ts = TIME_OFFSET + sec
        for pid, actor in enumerate(actors):
            half = actor["size"][k] / 2
            box = np.clip([(actor["x"][k] - half) / w, (actor["y"][k] - half) / h,
                           (actor["x"][k] + half) / w, (actor["y"][k] + half) / h], 0, 1)
            for act in actor["actions"]:
                gt.append(f"{video_id},{ts},{box[0]:.3f},{box[1]:.3f},{box[2]:.3f},{box[3]:.3f},{act},{pid}")
            if rng.random() >= 0.05:  # the person detector finds this actor
                jit = np.clip(box + rng.normal(0, 0.03, 4), 0, 1)
                if jit[2] - jit[0] > 0.02 and jit[3] - jit[1] > 0.02:
                    props.append(f"{video_id},{ts},{jit[0]:.3f},{jit[1]:.3f},{jit[2]:.3f},{jit[3]:.3f},,"
                                 f"{rng.uniform(0.85, 1.0):.3f}")
        if rng.random() < 0.4:  # a false positive somewhere in the frame
            cx, cy, bw, bh = rng.uniform(0.15, 0.85), rng.uniform(0.2, 0.8), rng.uniform(0.15, 0.3), rng.uniform(0.2, 0.35)
            fp = np.clip([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 0, 1)
            props.append(f"{video_id},{ts},{fp[0]:.3f},{fp[1]:.3f},{fp[2]:.3f},{fp[3]:.3f},,{rng.uniform(0.5, 0.95):.3f}")
    excluded = [f"{video_id},{TIME_OFFSET + int(rng.integers(1, spec.duration))}"] if index % 3 == 2 else []
    return {"video_id": video_id, "frames": frames, "audio": audio, "gt": gt, "proposals": props,
            "excluded": excluded, "meta": {"video_id": video_id, "split": split, "hopper": hopper,
                                           "actors": [{"action": a["action"], "digit": a["digit"]} for a in actors]}}


def generate(out: Path, *, spec: DetScale, seed: int, verify: bool = True) -> Path:
    """Write the dataset to `out` atomically (a temp folder renamed at the end).

    With ``verify`` its files are checked against the checksums shipped with avsf, as
    :func:`avsf.data.synthetic.dataset.generate_dataset` does (regenerated once on a mismatch,
    then a UserError).
    """
    start = time.time()
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    metas: list[dict] = []

    def make() -> Path:
        metas[:] = _write_all(tmp, spec=spec, seed=seed)
        return tmp

    try:
        _, result = checksums.generate_verified(make, key=f"ava-{spec.name}-seed{seed}",
                                                generator_version=GENERATOR_VERSION, spec=asdict(spec), verify=verify)
        manifest = {"generator_version": GENERATOR_VERSION, "kind": "ava", "scale": spec.name, "seed": seed,
                    "spec": asdict(spec), "actions": [{"id": i + 1, "name": a, "cue": CUES[a]} for i, a in enumerate(ACTIONS)],
                    "time_offset": TIME_OFFSET, "videos": metas, "generation_seconds": round(time.time() - start, 2),
                    "checksums": checksums.manifest_entry(result, verify=verify)}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))  # last: marks the folder complete
        swap_in(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _write_all(tmp: Path, *, spec: DetScale, seed: int) -> list[dict]:
    """Every video and annotation file into the new folder ``tmp``; the videos' metadata."""
    from avsf.data.synthetic.media import write_media

    (tmp / "videos").mkdir(parents=True)
    (tmp / "annotations").mkdir()
    ann = tmp / "annotations"
    metas = []
    for split in SPLITS:
        gt, props, excluded = [], [], []
        for i in range(spec.videos[split]):
            v = render_video(spec=spec, seed=seed, split=split, index=i)
            write_media(tmp / "videos" / f"{v['video_id']}.mp4", frames=v["frames"], fps=spec.fps, audio=v["audio"],
                        sample_rate=spec.sample_rate, options={"crf": str(spec.crf)})
            gt += v["gt"]
            props += v["proposals"]
            excluded += v["excluded"]
            metas.append(v["meta"])
        (ann / f"ava_{split}_v2.2.csv").write_text("\n".join(gt) + "\n")
        (ann / f"ava_{split}_predicted_boxes.csv").write_text("\n".join(props) + "\n")
        (ann / f"ava_{split}_excluded_timestamps_v2.2.csv").write_text("\n".join(excluded) + ("\n" if excluded else ""))
    (ann / "ava_action_list_v2.2_for_activitynet_2019.pbtxt").write_text(_label_map())
    return metas


def _complete(path: Path, *, scale: str, seed: int) -> bool:
    try:
        m = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return m.get("kind") == "ava" and m.get("generator_version") == GENERATOR_VERSION and \
        m.get("scale") == scale and m.get("seed") == seed


def ensure_synthetic_ava(root: str | os.PathLike, scale: str, seed: int) -> Path:
    """The synthetic AVA folder ``root/ava-<scale>-seed<seed>``, generated on first use."""
    if scale not in SCALES:
        raise UserError(f"unknown synthetic scale {scale!r} for the AVA data; choose one of {', '.join(SCALES)}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise UserError(f"synthetic seed {seed!r} must be a non-negative integer")
    return generate_once(Path(root) / f"ava-{scale}-seed{seed}",
                         complete=lambda out: _complete(out, scale=scale, seed=seed),
                         generate=lambda out: generate(out, spec=SCALES[scale], seed=seed))
