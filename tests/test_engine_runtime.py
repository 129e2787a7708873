"""Device plumbing that the GPU path relies on, checked on the CPU: memory formats, autocast
off on the CPU, device choice, seeds, and the CPU thread budget."""

import os

import pytest
import torch
from torch import nn

from avsf.engine import runtime
from avsf.errors import UserError


def test_channels_last_keeps_the_function_and_changes_the_layout():
    torch.manual_seed(0)
    model = nn.ModuleDict({"v": nn.Conv3d(3, 4, 3), "a": nn.Conv2d(1, 4, 3), "fc": nn.Linear(4, 2)})
    x3, x2 = torch.randn(2, 3, 4, 8, 8), torch.randn(2, 1, 8, 8)
    before = model["v"](x3), model["a"](x2)
    runtime.to_channels_last(model)
    assert model["v"].weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert not model["v"].weight.is_contiguous()
    assert model["a"].weight.is_contiguous(memory_format=torch.channels_last)
    after = model["v"](x3.contiguous(memory_format=torch.channels_last_3d)), model["a"](x2)
    assert torch.allclose(before[0], after[0], atol=1e-6) and torch.allclose(before[1], after[1], atol=1e-6)


def test_cpu_runs_exact_fp32():
    lin = nn.Linear(4, 4)
    with runtime.autocast(torch.device("cpu"), bf16=True):
        assert lin(torch.randn(2, 4)).dtype == torch.float32
    batch = runtime.move_batch({"slow": torch.zeros(1, 3, 2, 4, 4), "name": "x"}, torch.device("cpu"),
                               mean=(0.5,) * 3, std=(0.25,) * 3)
    assert batch["name"] == "x" and batch["slow"].dtype == torch.float32
    assert torch.equal(batch["slow"], torch.zeros(1, 3, 2, 4, 4))  # float video: already normalised


def test_move_batch_normalises_uint8_video_per_channel():
    """The loader ships uint8 video; move_batch gives (x / 255 - mean) / std per channel on the
    device, and leaves audio and labels alone."""
    g = torch.Generator().manual_seed(0)
    raw = torch.randint(0, 256, (2, 3, 4, 5, 5), dtype=torch.uint8, generator=g)
    audio = torch.randn(2, 1, 8, 4, generator=g)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    batch = runtime.move_batch({"fast": raw, "audio": audio, "label": torch.tensor([1, 2])}, torch.device("cpu"),
                               mean=mean, std=std)
    expect = (raw.float() / 255 - torch.tensor(mean).view(3, 1, 1, 1)) / torch.tensor(std).view(3, 1, 1, 1)
    assert batch["fast"].dtype == torch.float32
    assert torch.allclose(batch["fast"], expect, atol=1e-5)
    assert torch.equal(batch["audio"], audio) and torch.equal(batch["label"], torch.tensor([1, 2]))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error when no GPU is visible")
def test_cuda_without_gpu_is_a_user_error():
    with pytest.raises(UserError, match="device=cpu"):
        runtime.resolve_device("cuda")
    assert runtime.resolve_device("auto").type == "cpu"


def test_seeds_are_stable_and_distinct():
    assert runtime.derive_seed(0, "step", 5) == runtime.derive_seed(0, "step", 5)
    seeds = {runtime.derive_seed(s, "step", k, r) for s in range(3) for k in range(50) for r in range(2)}
    assert len(seeds) == 300 and all(0 <= s < 2**63 for s in seeds)


def test_cpu_threads_leave_a_core_per_worker():
    cores = len(os.sched_getaffinity(0))
    old = torch.get_num_threads()
    with runtime.cpu_threads(device=torch.device("cpu"), num_workers=1) as n:
        assert n == torch.get_num_threads() == max(1, min(old, cores - 1))
    assert torch.get_num_threads() == old
    with runtime.cpu_threads(device=torch.device("cpu"), num_workers=64) as n:
        assert n == 1
