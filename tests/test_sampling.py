"""Clip sampling in time and space, AVS negatives and their curriculum, transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avsf.data import sampling as S
from avsf.data.transforms import eval_transform, normalize_video, pack_pathways, train_transform
from avsf.presets import get_preset


def test_geometry_follows_the_preset():
    geo = S.ClipGeometry.from_config(get_preset("avslowfast_r50_4x16"))
    assert (geo.slow_frames, geo.fast_frames) == (4, 32)
    assert geo.span_s == pytest.approx(64 / 30)  # T x tau frames at 30 fps


def test_train_start_stays_in_the_window():
    rng = S.sample_rng(0, 1, 2)
    starts = [S.train_start(rng, window=(1.0, 5.0), span_s=2.0) for _ in range(200)]
    assert min(starts) >= 1.0 and max(starts) <= 3.0
    assert max(starts) - min(starts) > 1.5  # spread over the window, not stuck
    assert S.train_start(rng, window=(1.0, 2.0), span_s=2.0) == 1.0  # too short: start at the beginning


def test_sample_rng_is_determined_by_its_keys():
    a = S.sample_rng(3, 4, 5).random(4)
    assert np.array_equal(a, S.sample_rng(3, 4, 5).random(4))
    assert not np.array_equal(a, S.sample_rng(3, 4, 6).random(4))


def test_test_views_cover_the_video_uniformly():
    starts = S.test_starts(window=(0.0, 10.0), span_s=2.0, num_views=10)
    assert len(starts) == 10 and starts[0] == 0.0 and starts[-1] == pytest.approx(8.0)
    assert np.allclose(np.diff(starts), 8.0 / 9)
    assert S.test_starts(window=(0.0, 10.0), span_s=2.0, num_views=1) == [4.0]


def test_hard_negative_is_at_least_the_minimum_shift_away():
    rng = S.sample_rng(0)
    for _ in range(300):
        pos = float(rng.uniform(0, 8))
        neg = S.hard_negative_start(rng, window=(0.0, 10.0), span_s=2.0, positive_start=pos, min_shift_s=0.5)
        assert neg is not None and 0.0 <= neg <= 8.0 and abs(neg - pos) >= 0.5 - 1e-9
    # a video only just longer than the clip has no room for a shifted clip
    assert S.hard_negative_start(rng, window=(0.0, 2.2), span_s=2.0, positive_start=0.1, min_shift_s=0.5) is None


def test_curriculum_all_easy_then_a_quarter_hard():
    p = [S.hard_negative_probability(epoch=e, total_epochs=10, switch=0.5, fraction=0.25) for e in range(10)]
    assert p == [0.0] * 5 + [0.25] * 5


def test_three_spatial_views_along_the_long_side():
    assert S.spatial_offsets(height=256, width=340, crop=256, num_views=3) == [(0, 0), (0, 42), (0, 84)]
    assert S.spatial_offsets(height=340, width=256, crop=256, num_views=3) == [(0, 0), (42, 0), (84, 0)]
    assert S.spatial_offsets(height=256, width=340, crop=224, num_views=1) == [(16, 58)]


def _ramp_frames(n=8, h=40, w=60):
    """uint8 [n,h,w,3] whose value grows left to right (to see flips and crops)."""
    x = np.linspace(0, 255, w).astype(np.uint8)
    return np.broadcast_to(x[None, None, :, None], (n, h, w, 3)).copy()


def test_train_transform_shapes_dtype_and_determinism():
    frames = _ramp_frames()
    kw = dict(jitter=(64, 80), crop=56, flip=True)
    a = train_transform(frames, rng=S.sample_rng(1), **kw)
    b = train_transform(frames, rng=S.sample_rng(1), **kw)
    assert a.shape == (3, 8, 56, 56) and a.dtype == torch.uint8 and a.is_contiguous()
    assert torch.equal(a, b)
    # over many draws both orientations of the ramp appear (random flip)
    slopes = {bool(torch.sign(train_transform(frames, rng=S.sample_rng(i), **kw)[0, 0, 0, -1].int()
                              - train_transform(frames, rng=S.sample_rng(i), **kw)[0, 0, 0, 0].int()) > 0)
              for i in range(12)}
    assert slopes == {True, False}


def test_normalize_video_matches_the_formula_and_bounds():
    x = train_transform(_ramp_frames(), rng=S.sample_rng(1), jitter=(64, 80), crop=56, flip=True)
    y = normalize_video(x.unsqueeze(0), mean=(0.45,) * 3, std=(0.225,) * 3)
    assert y.dtype == torch.float32 and y.shape == (1, 3, 8, 56, 56)
    assert torch.allclose(y[0], (x.float() / 255 - 0.45) / 0.225, atol=1e-5)
    lo, hi = (0 - 0.45) / 0.225, (1 - 0.45) / 0.225
    assert y.min() >= lo - 1e-4 and y.max() <= hi + 1e-4
    with pytest.raises(TypeError, match="uint8"):
        normalize_video(y, mean=(0.45,) * 3, std=(0.225,) * 3)


def test_test_transform_crops_left_centre_right():
    frames = _ramp_frames(h=32, w=64)
    kw = dict(short_side=32, crop=32, num_spatial=3)
    left, centre, right = (eval_transform(frames, spatial_index=i, **kw) for i in range(3))
    assert left.shape == (3, 8, 32, 32)
    assert left.float().mean() < centre.float().mean() < right.float().mean()


def test_pack_pathways_keeps_every_alpha_th_frame():
    video = torch.arange(16, dtype=torch.float32).view(1, 16, 1, 1).expand(3, 16, 2, 2)
    slow, fast = pack_pathways(video, alpha=4)
    assert slow.shape == (3, 4, 2, 2) and fast.shape == (3, 16, 2, 2)
    assert slow[0, :, 0, 0].tolist() == [0, 4, 8, 12]
    with pytest.raises(ValueError, match="alpha"):
        pack_pathways(video[:, :15], alpha=4)


def test_resized_window_matches_resize_then_crop():
    from torchvision.transforms.v2 import functional as TF

    from avsf.data.transforms import resized_window

    yy, xx = np.mgrid[0:120, 0:160]
    img = ((np.sin(xx / 9.0) + np.cos(yy / 7.0)) * 60 + 128).astype(np.uint8)
    x = torch.from_numpy(np.stack([img] * 3)).unsqueeze(0)  # [1,3,120,160]
    for scaled, top, left in [((150, 200), 20, 37), ((120, 160), 0, 0), ((96, 128), 10, 50)]:
        resized = TF.resize(x, list(scaled), antialias=True)
        ref = TF.crop(resized, top, left, 64, 64)
        got = resized_window(x, top=top, left=left, crop=64, scaled=scaled)
        assert got.shape == ref.shape == (1, 3, 64, 64)
        # the window is rounded to whole source pixels: a sub-pixel shift, far below a 3-pixel one
        err = (got.float() - ref.float()).abs().mean()
        shifted = (TF.crop(resized, top + 3, left + 3, 64, 64).float() - ref.float()).abs().mean()
        assert err < 3.5 and err < 0.3 * shifted
