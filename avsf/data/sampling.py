"""Where clips come from in time and space: training clips, test views, AVS negatives.

A clip covers ``slow_frames * tau`` frames at the dataset's target fps (4 x 16 at 30 fps is
2.13 s). The Fast pathway sees ``alpha * slow_frames`` frames evenly spread over that span,
the Slow pathway every alpha-th of them (tau frames apart), and the audio the same span.

All randomness comes from a generator seeded by (seed, epoch, index, attempt): a sample does
not depend on which worker loads it or what it loaded before, so runs and resumes are exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClipGeometry:
    """The time layout of one clip."""

    slow_frames: int  # T
    alpha: int  # Fast frames per Slow frame
    tau: int  # target-fps frames between Slow frames
    target_fps: float

    @property
    def fast_frames(self) -> int:
        return self.slow_frames * self.alpha

    @property
    def span_s(self) -> float:
        """Seconds of video one clip covers."""
        return self.slow_frames * self.tau / self.target_fps

    @classmethod
    def from_config(cls, cfg) -> "ClipGeometry":
        m, d = cfg.model, cfg.data
        return cls(slow_frames=m.slow_frames, alpha=m.alpha, tau=d.sampling_rate, target_fps=d.target_fps)


def sample_rng(*keys: int) -> np.random.Generator:
    """A generator determined by the integer keys (seed, epoch, index, attempt, ...)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in keys])))


def train_start(rng: np.random.Generator, *, window: tuple[float, float], span_s: float) -> float:
    """A uniformly random clip start inside `window` = (begin, end) seconds; a window shorter
    than the clip starts at its beginning (the clip then runs past the end)."""
    begin, end = window
    slack = (end - begin) - span_s
    return begin + (float(rng.uniform(0.0, slack)) if slack > 0 else 0.0)


def test_starts(*, window: tuple[float, float], span_s: float, num_views: int) -> list[float]:
    """`num_views` clip starts spread uniformly from the window's start to its end (one view:
    the centre clip)."""
    begin, end = window
    slack = max(0.0, (end - begin) - span_s)
    if num_views == 1:
        return [begin + slack / 2]
    return [begin + slack * i / (num_views - 1) for i in range(num_views)]


def hard_negative_start(rng: np.random.Generator, *, window: tuple[float, float], span_s: float,
                        positive_start: float, min_shift_s: float) -> float | None:
    """A start at least `min_shift_s` away from `positive_start` in the same video, uniform
    over the allowed starts; None when the video is too short to allow one."""
    begin, end = window
    latest = max(begin, end - span_s)
    left = (begin, positive_start - min_shift_s)  # allowed starts before the positive
    right = (positive_start + min_shift_s, latest)  # and after it
    lengths = [max(0.0, hi - lo) for lo, hi in (left, right)]
    total = sum(lengths)
    if total <= 0:
        # a single allowed start (zero-length interval) still counts
        for lo, hi in (left, right):
            if hi >= lo and lo >= begin and hi <= latest:
                return lo
        return None
    u = float(rng.uniform(0.0, total))
    return left[0] + u if u < lengths[0] else right[0] + (u - lengths[0])


def hard_negative_probability(*, epoch: int, total_epochs: int, switch: float, fraction: float) -> float:
    """The paper's curriculum: only easy negatives (other videos) for the first `switch` of
    training, then a `fraction` of hard ones (same video, shifted)."""
    if total_epochs <= 0:
        return 0.0
    return fraction if epoch >= switch * total_epochs else 0.0


def spatial_offsets(*, height: int, width: int, crop: int, num_views: int) -> list[tuple[int, int]]:
    """Top-left corners of `num_views` crops spread along the long side (centred on the short
    side); one view is the centre crop. Three views: start, centre, end."""
    top_c, left_c = max(0, (height - crop) // 2), max(0, (width - crop) // 2)
    if num_views == 1:
        return [(top_c, left_c)]
    along_h = height > width
    slack = max(0, (height if along_h else width) - crop)
    positions = [int(round(slack * i / (num_views - 1))) for i in range(num_views)]
    return [(p, left_c) if along_h else (top_c, p) for p in positions]
