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
    batch = runtime.move_batch({"slow": torch.zeros(1, 3, 2, 4, 4), "name": "x"}, torch.device("cpu"))
    assert batch["name"] == "x" and batch["slow"].dtype == torch.float32


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
