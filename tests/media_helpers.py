"""Helpers for the data tests: media fixtures whose content says what it is.

Video frame i is a flat grey of level `frame_level(i)` (28 levels, 8 apart, so lossy codecs
cannot blur one into the next): a decoded frame tells which frame it was (mod 28). Audio is
silence with a 1 kHz tone burst at a chosen time, so the decoded span tells where it was cut.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from avsf.data.synthetic.media import write_media

LEVELS = 28


def frame_level(i: int) -> int:
    return 20 + (i % LEVELS) * 8


def level_index(mean_level: float) -> int:
    """Which frame (mod LEVELS) a decoded grey level belongs to."""
    return int(round((mean_level - 20) / 8)) % LEVELS


def grey_frames(*, seconds: float, fps: float, height: int = 32, width: int = 48) -> np.ndarray:
    n = int(round(seconds * fps))
    levels = np.array([frame_level(i) for i in range(n)], dtype=np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (n, height, width, 3)).copy()


def burst_audio(*, seconds: float, sample_rate: int, channels: int = 1, burst_at: float | None = 0.5,
                burst_s: float = 0.05, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """float32 [channels, S]: silence (or faint noise) with a 1 kHz burst at `burst_at`."""
    n = int(round(seconds * sample_rate))
    rng = np.random.default_rng(seed)
    x = (noise * rng.standard_normal((channels, n))).astype(np.float32)
    if burst_at is not None:
        a, m = int(burst_at * sample_rate), int(burst_s * sample_rate)
        t = np.arange(m) / sample_rate
        x[:, a:a + m] += 0.8 * np.sin(2 * np.pi * 1000 * t).astype(np.float32)
    return x


def write_clip(path, *, seconds: float = 2.0, fps: float = 30.0, sample_rate: int = 16000, channels: int = 1,
               video_codec: str = "libx264", audio_codec: str = "aac", audio: bool = True, video: bool = True,
               burst_at: float | None = 0.5, audio_seconds: float | None = None, noise: float = 0.0,
               size: tuple[int, int] = (32, 48), options: dict | None = None, seed: int = 0) -> Path:
    """A test clip (see the module docstring); returns its path."""
    frames = grey_frames(seconds=seconds, fps=fps, height=size[0], width=size[1]) if video else None
    sound = burst_audio(seconds=audio_seconds if audio_seconds is not None else seconds, sample_rate=sample_rate,
                        channels=channels, burst_at=burst_at, noise=noise, seed=seed) if audio else None
    write_media(path, frames=frames, fps=fps, audio=sound, sample_rate=sample_rate, video_codec=video_codec,
                audio_codec=audio_codec, options=options)
    return Path(path)


def write_kinetics(root, *, classes: list[str], per_class: int = 2, seconds: float = 2.0,
                   silent: tuple[int, ...] = (), splits=("train", "val", "test"), names_in_csv: bool = False,
                   extra_lines: tuple[str, ...] = ()) -> Path:
    """A tiny Kinetics-format dataset: {split}.csv with `path label` lines and classnames.json.

    Video k of the whole set gets noise audio seeded by k (distinct sounds), except the
    indices in `silent`, which have no audio stream.
    """
    root = Path(root)
    lines = []
    k = 0
    for c, name in enumerate(classes):
        for j in range(per_class):
            rel = f"{name.replace(' ', '_')}/clip_{j}.mp4"
            write_clip(root / rel, seconds=seconds, audio=k not in silent, noise=0.2, burst_at=None, seed=k)
            lines.append(f"{rel} {name if names_in_csv else c}")
            k += 1
    text = "\n".join(lines + list(extra_lines)) + "\n"
    for split in splits:
        (root / f"{split}.csv").write_text(text)
    (root / "classnames.json").write_text(json.dumps({n: i for i, n in enumerate(classes)}))
    return root


def tiny_cfg(root, *, dataset: str = "kinetics", preset: str = "avslowfast_tiny", overrides: list[str] | None = None):
    """The smoke-scale preset pointed at a test dataset."""
    from avsf.presets import get_preset

    return get_preset(preset).with_overrides([f"data.root={root}", f"data.dataset={dataset}"] + list(overrides or []))
