"""Lateral connections between pathways.

- :class:`FastToSlow`: a time-strided conv on Fast, concatenated to Slow (SlowFast).
- :class:`AudioLateral`: audio -> visual, the paper's A->FS (added to Slow after the F->S
  concat) and A->F->S (added to Fast, which then reaches Slow through F->S).
- :class:`AudioVisualNonLocal`: audio time steps attend over Slow positions (Table 5a "AV-NL").

Every audio->visual module returns a *contribution* that the network adds after multiplying
it by the DropPathway gate (0 or 1), so dropped laterals keep their parameters in the graph.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from avsf.models.blocks import bn3d


class FastToSlow(nn.Module):
    """Fast [N, C_f, alpha*T, H, W] -> [N, ratio*C_f, T, H, W] (conv kx1x1, stride alpha, BN, ReLU)."""

    def __init__(self, *, dim_fast: int, ratio: int, kernel: int, alpha: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(dim_fast, dim_fast * ratio, (kernel, 1, 1), stride=(alpha, 1, 1),
                              padding=(kernel // 2, 0, 0), bias=False)
        self.bn = bn3d(dim_fast * ratio)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, fast: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(fast)))


class AudioLateral(nn.Module):
    """Audio features [N, C_a, T_a, F_a] -> a visual contribution [N, C_v, T_v, 1, 1].

    Mean over frequency, then two temporal convs of kernel `kernel` (C_a -> `dim_inner`, then
    `dim_inner` -> C_v strided by T_a / T_v), each with BN and ReLU; the result broadcasts over
    H and W when added to the visual tensor.
    """

    def __init__(self, *, dim_audio: int, dim_inner: int, dim_visual: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv1d(dim_audio, dim_inner, kernel, padding=kernel // 2, bias=False),
            nn.BatchNorm1d(dim_inner), nn.ReLU(inplace=True),
            nn.Conv1d(dim_inner, dim_visual, kernel, stride=stride, padding=kernel // 2, bias=False),
            nn.BatchNorm1d(dim_visual), nn.ReLU(inplace=True))

    def forward(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        y = self.body(audio.mean(dim=3))  # [N, C_v, T_v]
        return y[:, :, :, None, None]


class AudioVisualNonLocal(nn.Module):
    """Audio as a probing signal over the video (paper section 3.1 (iii), Fig. 2 right).

    Each audio time step (frequency averaged) queries every visual position (T, H, W); the
    affinity gathers the visual features of the positions that step deems important, and sends
    the gathered features back to those positions with the same affinity. Output projection and
    BN (initialised at zero: the block starts as no change to the visual pathway).

    visual [N, C_v, T, H, W], audio [N, C_a, T_a, F_a] -> contribution [N, C_v, T, H, W].
    """

    def __init__(self, *, dim_audio: int, dim_inner: int, dim_visual: int, zero_init_final_bn: bool = True) -> None:
        super().__init__()
        self.inner = dim_inner
        self.query = nn.Conv1d(dim_audio, dim_inner, 1)
        self.key = nn.Conv3d(dim_visual, dim_inner, 1)
        self.value = nn.Conv3d(dim_visual, dim_inner, 1)
        self.out = nn.Conv3d(dim_inner, dim_visual, 1)
        self.bn = bn3d(dim_visual, zero_init=zero_init_final_bn)

    def forward(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        n, _, t, h, w = visual.shape
        q = self.query(audio.mean(dim=3))  # [N, d, T_a]
        k = self.key(visual).flatten(2)  # [N, d, P], P = T*H*W
        v = self.value(visual).flatten(2)  # [N, d, P]
        attn = torch.softmax(torch.einsum("nda,ndp->nap", q, k) / math.sqrt(self.inner), dim=-1)  # [N, T_a, P]
        gathered = torch.einsum("nap,ndp->nda", attn, v)  # [N, d, T_a]: what each audio step looks at
        y = torch.einsum("nap,nda->ndp", attn, gathered).reshape(n, self.inner, t, h, w)
        return self.bn(self.out(y))

    def matmul_flops(self, inputs: tuple, output: torch.Tensor) -> int:
        """Multiply-adds of the three attention products."""
        audio, visual = inputs
        n, _, t, h, w = visual.shape
        return 3 * n * self.inner * t * h * w * audio.shape[2]
