"""A run depends only on its config (issue 17, part 2): the same config gives the same final.json
and metrics.jsonl (timing fields aside) through `avsf train`, the debug and local backends at
any ``max_parallel``, any loader worker count, and from another clone path with the data at
another path. The Slurm door is tested in tests/test_slurm.py against the same reference.

What a run may legitimately depend on besides its config is the machine, recorded in
final.json's ``environment``: among it the intra-op thread count, which splits float sums
differently (1 and 2 threads give other numbers after a few steps). On the CPU the trainer
takes the cores minus the loader workers unless OMP_NUM_THREADS (or torch.set_num_threads)
sets fewer, so every door here runs at one thread: the loader's worker count then changes
nothing, while the fingerprint says what differs when the thread count does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import task_runs

from avsf import launch
from avsf.config import RunConfig
from avsf.presets import get_preset

REPO = Path(__file__).resolve().parents[1]
THREADS = 1


def _overrides(synthetic_parent: Path, split_dir: Path, **extra) -> dict[str, str]:
    # AVSlowFast with AVS and DropPathway: the model draws random numbers too; val and test at the end
    values = {"seed": 0, "solver.epochs": 2, "solver.batch_size": 4, "solver.reference_batch": 4,
              "solver.warmup_epochs": 1, "eval_every": 2, "log_every": 1, "data.num_temporal_views": 1,
              "data.synthetic_root": str(synthetic_parent), "data.split_dir": str(split_dir),
              "data.num_workers": 0, "device": "cpu", "tensorboard": "false", **extra}
    return {k: str(v) for k, v in values.items()}


def _cfg(synthetic_parent: Path, split_dir: Path, **extra) -> RunConfig:
    return get_preset("avslowfast_tiny").with_overrides(_overrides(synthetic_parent, split_dir, **extra))


def _result(run_dir: Path) -> dict:
    """final.json and metrics.jsonl without timing fields and without the config hash (another
    worker count is another config)."""
    out = task_runs.comparable(run_dir)
    out["final"].pop("config_hash", None)
    return out


@pytest.fixture(scope="module")
def setup(smoke_root, tmp_path_factory):
    """(synthetic parent, split dir, the reference run directory: `train()` in this process)."""
    import torch

    from avsf.engine.train import train

    base = tmp_path_factory.mktemp("identity")
    split = task_runs.four_class_split(smoke_root, base / "split")
    parent = smoke_root.parent
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        train(_cfg(parent, split), base / "reference")
    finally:
        torch.set_num_threads(threads)
    return parent, split, base / "reference"


@pytest.fixture
def one_thread_everywhere(monkeypatch):
    """One intra-op thread in this process and in the processes the backends start."""
    import torch

    monkeypatch.setenv("OMP_NUM_THREADS", str(THREADS))
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(threads)


def _same_as_reference(run_dir: Path, reference: Path) -> None:
    got, want = _result(run_dir), _result(reference)
    assert json.loads((run_dir / "final.json").read_text())["environment"]["torch_threads"] == THREADS
    assert got["final"] == want["final"]
    assert got["metrics"] == want["metrics"]


def test_the_reference_run_learned_and_a_thread_count_is_recorded(setup):
    _, _, reference = setup
    final = json.loads((reference / "final.json").read_text())
    assert final["environment"]["torch_threads"] == THREADS
    lines = [json.loads(x) for x in (reference / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and any("val_top1" in x for x in lines) and "top1" in final
    # (two epochs, then the test) the runs below must match to the last bit; the loss moves, so a wrong run would show
    assert lines[0]["train_loss"] != lines[1]["train_loss"]


def test_avsf_train_from_another_clone_path_with_the_data_elsewhere(setup, tmp_path, one_thread_everywhere):
    parent, split, reference = setup
    # the data and split files at other paths, the command run from another folder: a clone elsewhere
    data = tmp_path / "elsewhere" / "synthetic"
    shutil.copytree(parent / "smoke-seed0", data / "smoke-seed0", symlinks=True)
    split2 = task_runs.four_class_split(data / "smoke-seed0", tmp_path / "elsewhere" / "split")
    args = [sys.executable, "-m", "avsf", "train", "--preset", "avslowfast_tiny", "--out", str(tmp_path / "run")]
    for key, value in _overrides(data, split2).items():
        args += ["--set", f"{key}={value}"]
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run(args, cwd=cwd, env=env, check=True, capture_output=True, timeout=600)
    _same_as_reference(tmp_path / "run", reference)
    # the run's name (its config hash) does not see where the data lives either
    ours = json.loads((tmp_path / "run" / "final.json").read_text())["config_hash"]
    assert ours == json.loads((reference / "final.json").read_text())["config_hash"]


def test_two_loader_workers_change_nothing(setup, tmp_path, one_thread_everywhere):
    from avsf.engine.train import train

    parent, split, reference = setup
    train(_cfg(parent, split, **{"data.num_workers": 2}), tmp_path / "workers2")
    _same_as_reference(tmp_path / "workers2", reference)


@pytest.mark.parametrize("backend,max_parallel", [("debug", 1), ("local", 1), ("local", 2)])
def test_every_backend_and_max_parallel_give_the_reference(setup, tmp_path, one_thread_everywhere, backend,
                                                            max_parallel):
    parent, split, reference = setup
    # with max_parallel 2 another run (seed 1) trains beside it
    cfgs = [_cfg(parent, split), _cfg(parent, split, seed=1)] if max_parallel > 1 else [_cfg(parent, split)]
    launch.submit(cfgs, backend=backend, sweep_dir=tmp_path, max_parallel=max_parallel, verbose=False)
    frame = launch.wait(tmp_path, timeout_s=600, poll_s=0.5)
    assert list(frame["state"]) == ["done"] * len(cfgs), frame[["run", "state", "error"]].to_string()
    _same_as_reference(launch.run_dir_for(cfgs[0], tmp_path), reference)
    if max_parallel > 1:  # the neighbour is another computation, not a copy
        other = _result(launch.run_dir_for(cfgs[1], tmp_path))
        assert other["metrics"] != _result(reference)["metrics"]


def test_another_thread_count_is_told_apart_by_the_fingerprint(setup, tmp_path):
    """Two threads may give other numbers; when they do, final.json says why (the thread count)."""
    import torch

    from avsf.engine.train import train

    if (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1) < 2:
        pytest.skip("one core: the trainer cannot take two threads here")
    parent, split, reference = setup
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        train(_cfg(parent, split), tmp_path / "two_threads")
    finally:
        torch.set_num_threads(threads)
    got = json.loads((tmp_path / "two_threads" / "final.json").read_text())
    assert got["environment"]["torch_threads"] == 2
    assert {k: v for k, v in got["environment"].items() if k != "torch_threads"} == \
        {k: v for k, v in json.loads((reference / "final.json").read_text())["environment"].items()
         if k != "torch_threads"}


def test_a_capped_instruction_set_is_recorded_only_where_set(monkeypatch):
    """ATEN_CPU_CAPABILITY and friends make an AVX-512 CPU run the AVX2 kernels: a run made so says
    it in its fingerprint, and a machine run as it comes keeps the fingerprint it always had."""
    from avsf.fingerprint import KERNEL_ENV, environment_fingerprint

    for name in KERNEL_ENV:
        monkeypatch.delenv(name, raising=False)
    assert "kernel_env" not in environment_fingerprint()
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.setenv("MKL_CBWR", "")  # set but empty: caps nothing
    assert environment_fingerprint()["kernel_env"] == {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
