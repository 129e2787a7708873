"""Image work on decoded frames (torchvision.transforms.v2) and packing into pathways.

Frames arrive as uint8 [N,H,W,3] (numpy, from the decoder) and leave as uint8 [3,N,S,S]:
samples and batches stay uint8 (a quarter of float32's bytes to crop, copy between processes,
stack and send to the GPU), and :func:`normalize_video` turns them into normalised float32 on
the device the model runs on (``avsf.engine.runtime.move_batch``). Random choices are drawn by the caller's numpy generator, not torch's global
RNG, so a sample is the same whichever worker makes it.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF


def to_tensor_frames(frames: np.ndarray) -> torch.Tensor:
    """uint8 [N,H,W,3] numpy -> uint8 [N,3,H,W] tensor (a view, no copy)."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2)


def scaled_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(h, w) of a (height, width) frame resized so its short side is `short_side` (neither side below it)."""
    if height <= width:
        return short_side, max(short_side, int(round(width * short_side / height)))
    return max(short_side, int(round(height * short_side / width))), short_side


def resized_window(x: torch.Tensor, *, top: int, left: int, crop: int, scaled: tuple[int, int]) -> torch.Tensor:
    """The crop x crop window at (top, left) of `x` resized to `scaled` (h, w), computed by
    resizing only that window's source pixels (TF.resized_crop): the same picture as resize
    then crop, up to rounding the window to whole source pixels, at a fraction of the cost
    (the full-frame resize was the loader's largest cost after decoding).

    x: uint8 [N,3,H,W]. Returns uint8 [N,3,crop,crop].
    """
    y0, x0, win_h, win_w = source_window(x.shape[-2], x.shape[-1], top=top, left=left, crop=crop, scaled=scaled)
    return TF.resized_crop(x, y0, x0, win_h, win_w, [crop, crop], antialias=True)


def source_window(src_h: int, src_w: int, *, top: int, left: int, crop: int,
                  scaled: tuple[int, int]) -> tuple[int, int, int, int]:
    """(y0, x0, height, width) in source pixels of the crop x crop window at (top, left) of the
    frame resized to `scaled`, rounded to whole source pixels as :func:`resized_window` reads
    it (so boxes can be mapped exactly onto the picture the crop shows)."""
    sy, sx = src_h / scaled[0], src_w / scaled[1]
    win_h = min(src_h, max(1, int(round(crop * sy))))
    win_w = min(src_w, max(1, int(round(crop * sx))))
    y0 = min(src_h - win_h, int(round(top * sy)))
    x0 = min(src_w - win_w, int(round(left * sx)))
    return y0, x0, win_h, win_w


def channels_first(x: torch.Tensor) -> torch.Tensor:
    """uint8 [N,3,H,W] -> uint8 [3,N,H,W] (one contiguous copy)."""
    return x.permute(1, 0, 2, 3).contiguous()


def normalize_video(x: torch.Tensor, *, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 video [..., 3, T, H, W] (channels at dim -4) -> float32 (x / 255 - mean) / std,
    computed wherever `x` lives (on the GPU in training). One conversion, then in-place
    arithmetic: no intermediate tensors."""
    if x.dtype != torch.uint8:
        raise TypeError(f"normalize_video expects uint8 frames, got {x.dtype}")
    shape = (-1, 1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=x.device)
    scale = (1.0 / (std_t * 255.0)).view(shape)
    shift = (torch.tensor(mean, dtype=torch.float32, device=x.device) / std_t).view(shape)
    return x.to(torch.float32).mul_(scale).sub_(shift)


def train_transform(frames: np.ndarray, *, rng: np.random.Generator, jitter: tuple[int, int], crop: int,
                    flip: bool) -> torch.Tensor:
    """Short side to a random size in [jitter[0], jitter[1]], a random crop x crop square
    (both done at once, see resized_window), a horizontal flip with probability 1/2 (if
    `flip`). Normalising is :func:`normalize_video`'s job, on the device.

    frames: uint8 [N,H,W,3]. Returns uint8 [3,N,crop,crop].
    """
    x = to_tensor_frames(frames)
    src_h, src_w = x.shape[-2], x.shape[-1]
    short = int(rng.integers(jitter[0], jitter[1] + 1))
    short = max(short, crop)
    h, w = scaled_size(src_h, src_w, short)
    top = int(rng.integers(0, h - crop + 1))
    left = int(rng.integers(0, w - crop + 1))
    x = resized_window(x, top=top, left=left, crop=crop, scaled=(h, w))
    if flip and rng.random() < 0.5:
        x = TF.horizontal_flip(x)
    return channels_first(x)


def eval_transform(frames: np.ndarray, *, short_side: int, crop: int, spatial_index: int,
                   num_spatial: int) -> torch.Tensor:
    """Short side to `short_side`, then crop `spatial_index` of `num_spatial` crops spread
    along the long side (see sampling.spatial_offsets).

    frames: uint8 [N,H,W,3]. Returns uint8 [3,N,crop,crop].
    """
    from avsf.data.sampling import spatial_offsets

    x = to_tensor_frames(frames)
    h, w = scaled_size(x.shape[-2], x.shape[-1], max(short_side, crop))
    top, left = spatial_offsets(height=h, width=w, crop=crop, num_views=num_spatial)[spatial_index]
    x = resized_window(x, top=top, left=left, crop=crop, scaled=(h, w))
    return channels_first(x)


def pack_pathways(video: torch.Tensor, *, alpha: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a Fast-rate clip into (slow, fast): Slow keeps every alpha-th frame.

    video: [3, alpha*T, H, W]. Returns slow [3,T,H,W], fast [3,alpha*T,H,W].
    """
    if video.shape[1] % alpha:
        raise ValueError(f"clip of {video.shape[1]} frames does not split into alpha={alpha} groups")
    return video[:, ::alpha].contiguous(), video
