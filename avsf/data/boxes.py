"""Box geometry shared by the AVA reader and its evaluator: overlap, and boxes carried through
the spatial transforms. Boxes are (x1, y1, x2, y2) rows, [R,4]; numpy only.
"""

from __future__ import annotations

import numpy as np


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes a [A,4] and b [B,4] (x1, y1, x2, y2; area = width x height, no +1) -> [A,B]."""
    a, b = np.asarray(a, dtype=np.float64).reshape(-1, 4), np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def map_boxes(boxes: np.ndarray, *, src_h: int, src_w: int, y0: int, x0: int, win_h: int, win_w: int,
              out_h: int, out_w: int) -> np.ndarray:
    """Normalised boxes [R,4] of a src_h x src_w frame -> pixels of the output that shows the
    source window (y0, x0, win_h, win_w) resized to out_h x out_w, clipped to the output."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) * [src_w, src_h, src_w, src_h]
    b = (b - [x0, y0, x0, y0]) * [out_w / win_w, out_h / win_h, out_w / win_w, out_h / win_h]
    return np.clip(b, 0, [out_w, out_h, out_w, out_h]).astype(np.float32)


def flip_boxes(boxes: np.ndarray, *, width: int) -> np.ndarray:
    """Boxes of a horizontally flipped image of `width` pixels."""
    b = np.asarray(boxes, dtype=np.float32).copy()
    b[:, [0, 2]] = width - b[:, [2, 0]]
    return b
