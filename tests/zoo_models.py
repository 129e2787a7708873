"""SlowFast models of the zoos' own code, with random weights, for tests/test_convert.py.

PySlowFast's January-2020 snapshot (``slowfast==1.0``) and pytorchvideo 0.1.5 build their
SlowFast models on the CPU; what they import and these tests never run (detectron2's
ROIAlign, for the detection head) is stubbed in ``sys.modules`` by :func:`stub_missing_modules`,
inside the tests only. :func:`to_caffe2_blobs` names a PySlowFast state dict as the Caffe2 zoo
pickles do (the inverse of PySlowFast's c2 name map, which the tests check against PySlowFast's
own function).
"""

from __future__ import annotations

import importlib.util
import re
import sys
import types

import numpy as np
import pytest
import torch
from torch import nn


def stub_missing_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake ``detectron2.layers.ROIAlign`` (imported by PySlowFast's head_helper, used only
    by its detection head) when detectron2 is not installed; undone after the test."""
    if importlib.util.find_spec("detectron2") is not None:
        return

    class ROIAlign(nn.Module):
        def __init__(self, *args, **kwargs) -> None:
            raise NotImplementedError("a test stub: the detection head is not part of these tests")

    detectron2 = types.ModuleType("detectron2")
    layers = types.ModuleType("detectron2.layers")
    layers.ROIAlign = ROIAlign
    detectron2.layers = layers
    monkeypatch.setitem(sys.modules, "detectron2", detectron2)
    monkeypatch.setitem(sys.modules, "detectron2.layers", layers)


def pyslowfast_model(*, depth: int, slow_frames: int, alpha: int, fusion_kernel: int, crop: int, num_classes: int,
                     temporal_blocks_res4: int = 6, nonlocal_res4: tuple[int, ...] = (),
                     instantiation: str = "softmax") -> tuple[nn.Module, str]:
    """(PySlowFast's SlowFastModel, its config as the YAML its checkpoints keep). The head
    pools a (T, crop/32, crop/32) window, so inputs must be `crop` pixels square."""
    from slowfast.config.defaults import get_cfg
    from slowfast.models.video_model_builder import SlowFastModel

    cfg = get_cfg()
    cfg.MODEL.ARCH, cfg.MODEL.NUM_CLASSES, cfg.MODEL.DROPOUT_RATE = "slowfast", num_classes, 0.5
    cfg.DATA.NUM_FRAMES, cfg.DATA.CROP_SIZE = slow_frames * alpha, crop
    cfg.SLOWFAST.ALPHA, cfg.SLOWFAST.BETA_INV = alpha, 8
    cfg.SLOWFAST.FUSION_CONV_CHANNEL_RATIO, cfg.SLOWFAST.FUSION_KERNEL_SZ = 2, fusion_kernel
    cfg.RESNET.DEPTH, cfg.RESNET.ZERO_INIT_FINAL_BN = depth, True
    cfg.RESNET.NUM_BLOCK_TEMP_KERNEL = [[3, 3], [4, 4], [temporal_blocks_res4] * 2, [3, 3]]
    cfg.RESNET.SPATIAL_STRIDES = [[1, 1], [2, 2], [2, 2], [2, 2]]
    cfg.RESNET.SPATIAL_DILATIONS = [[1, 1], [1, 1], [1, 1], [1, 1]]
    cfg.NONLOCAL.LOCATION = [[[], []], [[], []], [list(nonlocal_res4), []], [[], []]]
    cfg.NONLOCAL.GROUP = [[1, 1], [1, 1], [1, 1], [1, 1]]
    cfg.NONLOCAL.INSTANTIATION = instantiation
    return SlowFastModel(cfg), cfg.dump()


def pytorchvideo_model(*, depth: int, slow_frames: int, alpha: int, fusion_kernel: int, crop: int, num_classes: int,
                       temporal_blocks_res4: int | None = None) -> nn.Module:
    """pytorchvideo's ``create_slowfast`` as its hub builds it (fusion stride alpha); the head
    pools the whole res5 map of a `crop`-pixel input. `temporal_blocks_res4` (R101_50_50:
    6): res4 blocks past it use temporal kernel 1; None: every block (its slowfast_r101)."""
    from pytorchvideo.models.slowfast import create_slowfast

    kw = {}
    if temporal_blocks_res4 is not None:
        n4 = {50: 6, 101: 23}[depth]
        res4 = ((3, 1, 1),) * temporal_blocks_res4 + ((1, 1, 1),) * (n4 - temporal_blocks_res4)
        kw["stage_conv_a_kernel_sizes"] = (((1, 1, 1), (1, 1, 1), res4, (3, 1, 1)),
                                           ((3, 1, 1), (3, 1, 1), res4, (3, 1, 1)))
    s = crop // 32
    return create_slowfast(model_depth=depth, model_num_class=num_classes,
                           slowfast_fusion_conv_kernel_size=(fusion_kernel, 1, 1),
                           slowfast_fusion_conv_stride=(alpha, 1, 1),
                           head_pool_kernel_sizes=((slow_frames, s, s), (slow_frames * alpha, s, s)), **kw)


@torch.no_grad()
def randomise(model: nn.Module, inputs: list[torch.Tensor], *, seed: int, head: nn.Linear,
              softmax_in_eval: bool) -> None:
    """Random BN affine parameters, then running statistics from one pass over `inputs` in
    training mode, perturbed per channel (so eval keeps activations in range and every BN's
    statistics differ from its neighbours'); then the head scaled so the class scores spread
    (softmax far from uniform: a wrong mapping shows in it). `softmax_in_eval`: the model
    returns probabilities in eval (PySlowFast's 2020 head), else logits (pytorchvideo)."""
    g = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.weight.copy_(torch.empty(bn.num_features).uniform_(0.5, 1.5, generator=g))
        bn.bias.copy_(torch.randn(bn.num_features, generator=g) * 0.2)
        bn.momentum = 1.0  # running stats := this batch's
    for m in model.modules():
        if isinstance(m, nn.Conv3d) and m.bias is not None:  # PySlowFast's non-local convs have biases
            m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    model.train()
    model([x.clone() for x in inputs])  # both frameworks write into the list they are given
    for bn in bns:
        bn.running_mean.add_(torch.randn(bn.num_features, generator=g) * 0.1 * bn.running_var.sqrt())
        bn.running_var.mul_(torch.empty(bn.num_features).uniform_(0.8, 1.25, generator=g))
        bn.num_batches_tracked.fill_(int(torch.randint(1, 1000, (1,), generator=g)))
        bn.momentum = 0.1
    head.weight.copy_(torch.randn(head.weight.shape, generator=g))
    head.bias.copy_(torch.randn(head.bias.shape, generator=g))
    model.eval()
    for _ in range(3):  # saturated probabilities underflow and understate the spread: repeat
        scores = model([x.clone() for x in inputs])
        logits = scores.clamp_min(1e-30).log() if softmax_in_eval else scores
        spread = float(logits.std(dim=1).mean())
        head.weight.mul_(3.0 / max(spread, 1e-6))  # class scores with a standard deviation of about 3


def to_caffe2_blobs(state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """A PySlowFast SlowFast state dict as Caffe2 zoo blobs (names and float32 arrays); the
    BN step counters, which Caffe2 does not keep, are left out."""
    fast_last = {}  # stage -> index of its last Fast block (the lateral is named after it)
    for k in state:
        m = re.match(r"^s(\d)\.pathway1_res(\d+)\.", k)
        if m:
            fast_last[m[1]] = max(fast_last.get(m[1], 0), int(m[2]))
    bn = {"weight": "s", "bias": "b", "running_mean": "rm", "running_var": "riv"}
    out = {}
    for k, v in state.items():
        if k.endswith("num_batches_tracked"):
            continue
        entry = k.rsplit(".", 1)[1]
        c2 = None
        if m := re.match(r"^s1\.pathway(\d)_stem\.(conv|bn)\.", k):
            t = "t_" if m[1] == "1" else ""
            c2 = f"{t}conv1_{entry[0]}" if m[2] == "conv" else f"{t}res_conv1_bn_{bn[entry]}"
        elif m := re.match(r"^s(\d)_fuse\.(conv_f2s|bn)\.", k):
            base = "t_pool1_subsample" if m[1] == "1" else f"t_res{m[1]}_{fast_last[m[1]]}_branch2c_bn_subsample"
            c2 = f"{base}_{entry[0]}" if m[2] == "conv_f2s" else f"{base}_bn_{bn[entry]}"
        elif m := re.match(r"^s(\d)\.pathway(\d)_res(\d+)\.branch2\.([abc])(_bn)?\.", k):
            t = "t_" if m[2] == "1" else ""
            c2 = f"{t}res{m[1]}_{m[3]}_branch2{m[4]}_" + (f"bn_{bn[entry]}" if m[5] else entry[0])
        elif m := re.match(r"^s(\d)\.pathway(\d)_res(\d+)\.branch1(_bn)?\.", k):
            t = "t_" if m[2] == "1" else ""
            c2 = f"{t}res{m[1]}_{m[3]}_branch1_" + (f"bn_{bn[entry]}" if m[4] else entry[0])
        elif m := re.match(r"^s(\d)\.pathway0_nonlocal(\d+)\.(conv_(\w+)|bn)\.", k):
            c2 = (f"nonlocal_conv{m[1]}_{m[2]}_{m[4]}_{entry[0]}" if m[4] else
                  f"nonlocal_conv{m[1]}_{m[2]}_bn_{bn[entry]}")
        elif k.startswith("head.projection."):
            c2 = f"pred_{entry[0]}"
        if c2 is None:
            raise KeyError(f"no Caffe2 name for {k}")
        out[c2] = v.detach().numpy().astype(np.float32)
    return out
