"""Residual building blocks: 3-D bottlenecks for the visual pathways, 2-D bottlenecks and
time-frequency factorised blocks for the Audio pathway, and the non-local block.

Video tensors are [N, C, T, H, W]; audio tensors are [N, C, T, F] (time x mel frequency).

Memory format: activations and conv weights are channels-last (``channels_last_3d`` for video,
``channels_last`` for audio; :func:`channels_last`), the layout oneDNN's and cuDNN's
convolutions work in. In the default layout every convolution converts its input and output
(and, in backward, its gradients) on the fly, and a tensor whose channel count is 1 (the
log-mel input) is ambiguous, so the audio pathway fell back to the default layout and mixed
the two; a layout never changes a value, only the summation order of kernels (fp32 rounding).

Strided 1x1 convolutions (the projected shortcuts) are :class:`PointwiseConv2d` and
:class:`PointwiseConv3d`: where the input has few channels they subsample first and convolve
at unit stride, steering clear of a oneDNN bug that corrupts the heap (see
:func:`pointwise_conv`).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """`x` in the channels-last layout of its rank (5-D: channels_last_3d, 4-D: channels_last);
    other ranks, and tensors already in that layout, are returned as they are."""
    if x.dim() == 5:
        return x.contiguous(memory_format=torch.channels_last_3d)
    if x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def is_channels_last(x: torch.Tensor) -> bool:
    """True when `x` is in its rank's channels-last layout and not also in the default one."""
    fmt = {5: torch.channels_last_3d, 4: torch.channels_last}.get(x.dim())
    return fmt is not None and not x.is_contiguous() and x.is_contiguous(memory_format=fmt)


def cat_channels(xs: list[torch.Tensor]) -> torch.Tensor:
    """``torch.cat(xs, dim=1)`` whose backward hands each input a gradient in its own layout
    (autograd's are channel slices of the output's gradient, strided views that every layer
    below then reads element by element or copies)."""
    return _CatChannels.apply(*xs)


class _CatChannels(torch.autograd.Function):
    @staticmethod
    def forward(ctx, *xs: torch.Tensor) -> torch.Tensor:
        ctx.sizes = [x.shape[1] for x in xs]
        return torch.cat(xs, dim=1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(channels_last(g) for g in grad.split(ctx.sizes, dim=1))


def convs_to_channels_last(module: nn.Module) -> nn.Module:
    """Every 2-D and 3-D conv weight of `module` in place to channels-last (same values, names
    and shapes, so state dicts load either way)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            m.weight.data = channels_last(m.weight.data)
    return module


# oneDNN's vector block of fp32 channels (16 on AVX-512; AVX2's 8 divides it)
_ONEDNN_IC_BLOCK = 16


def pointwise_conv(conv: nn.Conv2d | nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    """`conv` (1x1, no padding, dilation or groups) applied to `x`; a strided one on the CPU
    with a channel count that is not a multiple of 16 subsamples `x` and convolves at unit
    stride: the same sums (``y[..., i, j] = W x[..., s i, s j]``), not the same kernel.

    Why: oneDNN (v3.12, PyTorch 2.14's CPU convolutions) computes a strided 1x1 conv's weight
    gradient by first gathering the strided pixels into a per-thread workspace ("reduce to
    unit stride"); for channels-last inputs with fewer channels than its vector block it
    offsets that workspace by the block, not the channel count, and writes past it
    (uxlfoundation/oneDNN#6035): heap corruption, segfaults in backward (the Audio pathway's
    res3 shortcut at audio_beta 1/8, 8 channels), silent wrong gradients on AVX2. A unit
    stride takes another path. Channel counts that are multiples of the block, every
    preset's default, keep oneDNN's strided kernel."""
    stride = conv.stride
    if max(stride) == 1 or x.device.type != "cpu" or conv.in_channels % _ONEDNN_IC_BLOCK == 0:
        return conv._conv_forward(x, conv.weight, conv.bias)
    fn = nn.functional.conv3d if x.dim() == 5 else nn.functional.conv2d
    y = fn(_Subsample.apply(x, tuple(stride)), conv.weight, conv.bias)
    # on one thread PyTorch sends small unit-stride 1x1 convs to its native kernel, which
    # returns the default layout; keep the pathway's
    return channels_last(y) if is_channels_last(x) else y


class _Subsample(torch.autograd.Function):
    """``x[:, :, ::s1, ::s2, ...]`` copied into `x`'s layout; its backward scatters the gradient
    into zeros of that layout too (autograd's slice backward allocates the default layout)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, step: tuple[int, ...]) -> torch.Tensor:
        ctx.shape, ctx.index = x.shape, (slice(None), slice(None), *(slice(None, None, s) for s in step))
        ctx.channels_last = is_channels_last(x)
        y = x[ctx.index]
        return channels_last(y) if ctx.channels_last else y.contiguous()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        fmt = {5: torch.channels_last_3d, 4: torch.channels_last}.get(len(ctx.shape), torch.contiguous_format)
        out = torch.empty(ctx.shape, dtype=grad.dtype, device=grad.device,
                          memory_format=fmt if ctx.channels_last else torch.contiguous_format).zero_()
        out[ctx.index] = grad
        return out, None


class PointwiseConv2d(nn.Conv2d):
    """``nn.Conv2d(dim_in, dim_out, 1, stride=stride, bias=False)`` (same parameter, same values)
    run by :func:`pointwise_conv`. [N, C_in, T, F] -> [N, C_out, ceil(T/s), ceil(F/s)]."""

    def __init__(self, dim_in: int, dim_out: int, *, stride: int) -> None:
        super().__init__(dim_in, dim_out, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pointwise_conv(self, x)


class PointwiseConv3d(nn.Conv3d):
    """``nn.Conv3d(dim_in, dim_out, 1, stride=stride, bias=False)`` run by :func:`pointwise_conv`.
    [N, C_in, T, H, W] -> [N, C_out, ceil(T/st), ceil(H/sh), ceil(W/sw)]."""

    def __init__(self, dim_in: int, dim_out: int, *, stride: tuple[int, int, int]) -> None:
        super().__init__(dim_in, dim_out, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pointwise_conv(self, x)


def _bn_in_default_layout(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> bool:
    """Whether `bn` should normalise `x` in the default layout: a channels-last CPU input whose
    channel count is not a multiple of oneDNN's / ATen's fp32 vector block (16), in a step that
    will run backward. ATen's channels-last BN backward vectorises over channels, and with fewer
    than a vector's worth it runs its tail loop for every pixel: 8 channels on [64, 8, 64, 40]
    (the tiny Audio pathway's stem and res2 inner width) took 12 ms forward+backward against
    1.6 ms in the default layout (this 2-core AVX-512 Xeon, 2 threads), the Fast stem's 4
    channels likewise. Two layout copies cost far less. Same per-channel math either way."""
    return (bn.training and torch.is_grad_enabled() and x.device.type == "cpu"
            and bn.num_features % _ONEDNN_IC_BLOCK != 0 and is_channels_last(x))


class _ToDefaultLayout(torch.autograd.Function):
    """``x.contiguous()`` whose backward hands the gradient back channels-last (autograd's copy
    would pass the default layout on to the conv below)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return channels_last(grad)


class BatchNorm3d(nn.BatchNorm3d):
    """``nn.BatchNorm3d`` (same parameters and buffers) that normalises a few-channel
    channels-last CPU input in the default layout (:func:`_bn_in_default_layout`) and hands
    the result back channels-last. [N, C, T, H, W] -> same."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _bn_in_default_layout(self, x):
            return channels_last(super().forward(_ToDefaultLayout.apply(x)))
        return super().forward(x)


class BatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` with :class:`BatchNorm3d`'s layout rule. [N, C, T, F] -> same."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _bn_in_default_layout(self, x):
            return channels_last(super().forward(_ToDefaultLayout.apply(x)))
        return super().forward(x)


def bn3d(channels: int, *, zero_init: bool = False) -> nn.BatchNorm3d:
    """BatchNorm3d; `zero_init` sets gamma to 0 so a residual branch starts as identity."""
    bn = BatchNorm3d(channels)
    if zero_init:
        nn.init.zeros_(bn.weight)
    return bn


def bn2d(channels: int, *, zero_init: bool = False) -> nn.BatchNorm2d:
    bn = BatchNorm2d(channels)
    if zero_init:
        nn.init.zeros_(bn.weight)
    return bn


class Bottleneck3d(nn.Module):
    """Visual bottleneck: [kt x1x1, C_in -> C_inner], [1x3x3, stride s], [1x1x1 -> C_out], plus
    the (projected) shortcut.

    Input [N, C_in, T, H, W] -> output [N, C_out, T, H/s, W/s].
    """

    def __init__(self, *, dim_in: int, dim_inner: int, dim_out: int, temporal_kernel: int,
                 spatial_stride: int, zero_init_final_bn: bool, dilation: int = 1) -> None:
        super().__init__()
        self.conv_a = nn.Conv3d(dim_in, dim_inner, (temporal_kernel, 1, 1),
                                padding=(temporal_kernel // 2, 0, 0), bias=False)
        self.bn_a = bn3d(dim_inner)
        # `dilation` > 1 (the detector's res5): a dilated 3x3, padded to keep the size
        self.conv_b = nn.Conv3d(dim_inner, dim_inner, (1, 3, 3), stride=(1, spatial_stride, spatial_stride),
                                padding=(0, dilation, dilation), dilation=(1, dilation, dilation), bias=False)
        self.bn_b = bn3d(dim_inner)
        self.conv_c = nn.Conv3d(dim_inner, dim_out, 1, bias=False)
        self.bn_c = bn3d(dim_out, zero_init=zero_init_final_bn)
        self.shortcut: nn.Module | None = None
        if dim_in != dim_out or spatial_stride != 1:
            self.shortcut = nn.Sequential(
                PointwiseConv3d(dim_in, dim_out, stride=(1, spatial_stride, spatial_stride)),
                bn3d(dim_out))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        y = self.relu(self.bn_a(self.conv_a(x)))
        y = self.relu(self.bn_b(self.conv_b(y)))
        y = self.bn_c(self.conv_c(y))
        return self.relu(y + identity)


class NonLocal3d(nn.Module):
    """Embedded-Gaussian non-local block (Wang et al. 2018) with max-pooled keys and values.

    Input and output [N, C, T, H, W]; the output BN starts at zero so the block starts as identity.
    """

    def __init__(self, *, dim: int, zero_init_final_bn: bool = True) -> None:
        super().__init__()
        self.inner = max(dim // 2, 1)
        self.theta = nn.Conv3d(dim, self.inner, 1)
        self.phi = nn.Conv3d(dim, self.inner, 1)
        self.g = nn.Conv3d(dim, self.inner, 1)
        self.pool = nn.MaxPool3d((1, 2, 2), stride=(1, 2, 2))
        self.out = nn.Conv3d(self.inner, dim, 1)
        self.bn = bn3d(dim, zero_init=zero_init_final_bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, t, h, w = x.shape
        q = self.theta(x).flatten(2)  # [N, d, THW]
        k = self.phi(self.pool(x)).flatten(2)  # [N, d, P]
        v = self.g(self.pool(x)).flatten(2)  # [N, d, P]
        attn = torch.softmax(torch.einsum("ndq,ndp->nqp", q, k) / math.sqrt(self.inner), dim=-1)
        y = torch.einsum("nqp,ndp->ndq", attn, v).reshape(n, self.inner, t, h, w)
        return x + self.bn(self.out(y))

    def matmul_flops(self, inputs: tuple, output: torch.Tensor) -> int:
        """Multiply-adds of the two attention products (the convs are counted by their own hooks)."""
        n, _, t, h, w = inputs[0].shape
        positions = t * h * w
        pooled = t * (h // 2) * (w // 2)
        return 2 * n * self.inner * positions * pooled


class VisualResStage(nn.Module):
    """`depth` bottlenecks; the first changes width and applies the spatial stride.

    Input [N, C_in, T, H, W] -> [N, C_out, T, H/s, W/s]. Only the first `temporal_blocks`
    blocks (all when None) use `temporal_kernel`; the rest use 1 (PySlowFast's R101 keeps
    temporal kernels in the first 6 res4 blocks only). `nonlocal_after` lists block indices
    followed by a non-local block. `dilation` dilates every block's 3x3 (the detector's res5,
    PySlowFast's SPATIAL_DILATIONS).
    """

    def __init__(self, *, depth: int, dim_in: int, dim_inner: int, dim_out: int, temporal_kernel: int,
                 spatial_stride: int, zero_init_final_bn: bool, nonlocal_after: tuple[int, ...] = (),
                 temporal_blocks: int | None = None, dilation: int = 1) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(depth):
            layers.append(Bottleneck3d(dim_in=dim_in if i == 0 else dim_out, dim_inner=dim_inner, dim_out=dim_out,
                                       temporal_kernel=temporal_kernel if temporal_blocks is None or i < temporal_blocks else 1,
                                       spatial_stride=spatial_stride if i == 0 else 1,
                                       zero_init_final_bn=zero_init_final_bn, dilation=dilation))
            if i in nonlocal_after:
                layers.append(NonLocal3d(dim=dim_out, zero_init_final_bn=zero_init_final_bn))
        self.blocks = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class Bottleneck2d(nn.Module):
    """Audio bottleneck on a log-mel map: [1x1], [3x3 stride s], [1x1] + shortcut.

    Input [N, C_in, T, F] -> [N, C_out, T/s, F/s].
    """

    def __init__(self, *, dim_in: int, dim_inner: int, dim_out: int, stride: int, zero_init_final_bn: bool) -> None:
        super().__init__()
        self.branch = nn.Sequential(
            nn.Conv2d(dim_in, dim_inner, 1, bias=False), bn2d(dim_inner), nn.ReLU(inplace=True),
            nn.Conv2d(dim_inner, dim_inner, 3, stride=stride, padding=1, bias=False), bn2d(dim_inner),
            nn.ReLU(inplace=True),
            nn.Conv2d(dim_inner, dim_out, 1, bias=False), bn2d(dim_out, zero_init=zero_init_final_bn))
        self.shortcut = _shortcut2d(dim_in, dim_out, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        return self.relu(self.branch(x) + identity)


def _shortcut2d(dim_in: int, dim_out: int, stride: int) -> nn.Module | None:
    if dim_in == dim_out and stride == 1:
        return None
    return nn.Sequential(PointwiseConv2d(dim_in, dim_out, stride=stride), bn2d(dim_out))


class TimeFreqBlock(nn.Module):
    """Time-frequency factorised residual block of the Audio pathway (paper section 3).

    ``variant="concat"`` (the paper's, the authors' `_v1`): a 3x1 (time) and a 1x3 (frequency)
    conv run in parallel on the input, each C_in -> C_inner; their outputs are concatenated
    (2 C_inner) and a 1x1 conv maps them to C_out.
    ``variant="sum"`` (pytorchvideo, the authors' `_v2`): a 1x1 reduction to C_inner first, then
    the 3x1 and 1x3 convs in parallel, summed, then 1x1 to C_out.
    Input [N, C_in, T, F] -> [N, C_out, T/s, F/s].
    """

    def __init__(self, *, dim_in: int, dim_inner: int, dim_out: int, stride: int, variant: str,
                 zero_init_final_bn: bool) -> None:
        super().__init__()
        if variant not in ("concat", "sum"):
            raise ValueError(f"time-frequency block variant {variant!r}: choose concat or sum")
        self.variant = variant
        self.reduce: nn.Module | None = None
        branch_in = dim_in
        if variant == "sum":
            self.reduce = nn.Sequential(nn.Conv2d(dim_in, dim_inner, 1, bias=False), bn2d(dim_inner),
                                        nn.ReLU(inplace=True))
            branch_in = dim_inner
        self.time = nn.Sequential(nn.Conv2d(branch_in, dim_inner, (3, 1), stride=stride, padding=(1, 0), bias=False),
                                  bn2d(dim_inner))
        self.freq = nn.Sequential(nn.Conv2d(branch_in, dim_inner, (1, 3), stride=stride, padding=(0, 1), bias=False),
                                  bn2d(dim_inner))
        merged = 2 * dim_inner if variant == "concat" else dim_inner
        self.out = nn.Sequential(nn.Conv2d(merged, dim_out, 1, bias=False), bn2d(dim_out, zero_init=zero_init_final_bn))
        self.shortcut = _shortcut2d(dim_in, dim_out, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        y = x if self.reduce is None else self.reduce(x)
        if self._fuse_branches(y):
            both = self._time_and_freq(y)  # [t | f] on the channels
            if self.variant == "concat":
                merged = self.relu(both)
            else:
                t, f = both.chunk(2, dim=1)
                merged = self.relu(t + f)
        else:
            t, f = self.time(y), self.freq(y)
            if self.variant == "concat":
                merged = cat_channels([self.relu(t), self.relu(f)])
            else:
                merged = self.relu(t + f)
        return self.relu(self.out(merged) + identity)

    def _fuse_branches(self, y: torch.Tensor) -> bool:
        """Run the 3x1 and 1x3 branches as one conv + one BN (:meth:`_time_and_freq`): in a CPU
        training step when the branch width is not a multiple of the 16-float vector block (the
        tiny models' 8), where two narrow convs and BNs cost more than one twice as wide with a
        3x3 kernel. Evaluation and FLOP counting (no grad) keep the two convs the paper counts."""
        bt, bf = self.time[1], self.freq[1]
        return (y.device.type == "cpu" and torch.is_grad_enabled() and bt.training
                and bt.num_features % _ONEDNN_IC_BLOCK != 0 and is_channels_last(y)
                and bt.training == bf.training and bt.momentum == bf.momentum and bt.eps == bf.eps
                and bt.track_running_stats and bf.track_running_stats
                and bool(bt.num_batches_tracked == bf.num_batches_tracked))

    def _time_and_freq(self, y: torch.Tensor) -> torch.Tensor:
        """``cat([time(y), freq(y)], dim=1)`` computed as one 3x3 conv whose kernel holds the 3x1
        weights in its middle column and the 1x3 weights in its middle row (zeros elsewhere add
        exact zeros: the same terms, summed in another order), then one BN over both halves with
        the two BNs' parameters and running statistics (updated in place, as each BN would)."""
        conv_t, bt = self.time
        conv_f, bf = self.freq
        weight = channels_last(torch.cat([nn.functional.pad(conv_t.weight, (1, 1, 0, 0)),
                                          nn.functional.pad(conv_f.weight, (0, 0, 1, 1))]))
        both = nn.functional.conv2d(y, weight, stride=conv_t.stride, padding=1)
        mean = torch.cat([bt.running_mean, bf.running_mean])
        var = torch.cat([bt.running_var, bf.running_var])
        factor = 0.0
        if bt.training:
            for bn in (bt, bf):
                bn.num_batches_tracked.add_(1)
            factor = bt.momentum if bt.momentum is not None else 1.0 / float(bt.num_batches_tracked)
        both = nn.functional.batch_norm(both, mean, var, torch.cat([bt.weight, bf.weight]),
                                        torch.cat([bt.bias, bf.bias]), bt.training, factor, bt.eps)
        if bt.training:
            c = bt.num_features
            with torch.no_grad():
                for bn, part in ((bt, slice(0, c)), (bf, slice(c, 2 * c))):
                    bn.running_mean.copy_(mean[part])
                    bn.running_var.copy_(var[part])
        return both


class AudioResStage(nn.Module):
    """`depth` audio blocks (time-frequency blocks or 2-D bottlenecks); the first applies the
    stride in time and frequency. Input [N, C_in, T, F] -> [N, C_out, T/s, F/s]."""

    def __init__(self, *, depth: int, dim_in: int, dim_inner: int, dim_out: int, stride: int, tf_block: str,
                 zero_init_final_bn: bool) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        for i in range(depth):
            kw = dict(dim_in=dim_in if i == 0 else dim_out, dim_inner=dim_inner, dim_out=dim_out,
                      stride=stride if i == 0 else 1, zero_init_final_bn=zero_init_final_bn)
            if tf_block == "none":
                blocks.append(Bottleneck2d(**kw))
            else:
                blocks.append(TimeFreqBlock(variant=tf_block, **kw))
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class VisualStem(nn.Module):
    """[kt x 7 x 7] conv, stride (1, 2, 2), BN, ReLU, then max pool (1,3,3)/(1,2,2) ("pool1").

    Input [N, 3, T, H, W] -> [N, C, T, H/4, W/4].
    """

    def __init__(self, *, dim_out: int, temporal_kernel: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, dim_out, (temporal_kernel, 7, 7), stride=(1, 2, 2),
                              padding=(temporal_kernel // 2, 3, 3), bias=False)
        self.bn = bn3d(dim_out)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.relu(self.bn(self.conv(x))))


class AudioStem(nn.Module):
    """A 9x1 (time) and a 1x9 (frequency) conv on the log-mel, summed, BN, ReLU; stride 1 and
    no pooling (the audio keeps its full time-frequency resolution into res2).

    Input [N, 1, T, F] -> [N, C, T, F].
    """

    def __init__(self, *, dim_out: int) -> None:
        super().__init__()
        self.time = nn.Conv2d(1, dim_out, (9, 1), padding=(4, 0), bias=False)
        self.freq = nn.Conv2d(1, dim_out, (1, 9), padding=(0, 4), bias=False)
        self.bn = bn2d(dim_out)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the 1-channel input gives the convs no layout to follow: set the pathway's here
        return self.relu(self.bn(channels_last(self.time(x) + self.freq(x))))
