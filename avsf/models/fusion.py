"""Lateral connections between pathways.

- :class:`FastToSlow`: a time-strided conv on Fast, concatenated to Slow (SlowFast).
- :class:`AudioLateral`: audio -> visual, the paper's A->FS (added to Slow after the F->S
  concat) and A->F->S (added to Fast, which then reaches Slow through F->S).
- :class:`AudioVisualNonLocal`: Slow positions attend over audio time steps (Table 5a "AV-NL").

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
    """Every visual position queries the audio time steps (frequency averaged).

    visual [N, C_v, T, H, W], audio [N, C_a, T_a, F_a] -> contribution [N, C_v, T, H, W]
    (BN initialised at zero: the block starts as no change to the visual pathway).
    """

    def __init__(self, *, dim_audio: int, dim_inner: int, dim_visual: int, zero_init_final_bn: bool = True) -> None:
        super().__init__()
        self.inner = dim_inner
        self.theta = nn.Conv3d(dim_visual, dim_inner, 1)
        self.phi = nn.Conv1d(dim_audio, dim_inner, 1)
        self.g = nn.Conv1d(dim_audio, dim_inner, 1)
        self.out = nn.Conv3d(dim_inner, dim_visual, 1)
        self.bn = bn3d(dim_visual, zero_init=zero_init_final_bn)

    def forward(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        n, _, t, h, w = visual.shape
        a = audio.mean(dim=3)  # [N, C_a, T_a]
        q = self.theta(visual).flatten(2)  # [N, d, THW]
        k, v = self.phi(a), self.g(a)  # [N, d, T_a]
        attn = torch.softmax(torch.einsum("ndq,ndp->nqp", q, k) / math.sqrt(self.inner), dim=-1)
        y = torch.einsum("nqp,ndp->ndq", attn, v).reshape(n, self.inner, t, h, w)
        return self.bn(self.out(y))

    def matmul_flops(self, inputs: tuple, output: torch.Tensor) -> int:
        audio, visual = inputs
        n, _, t, h, w = visual.shape
        return 2 * n * self.inner * t * h * w * audio.shape[2]
