"""`avsf bench gpu` (avsf.engine.gpu_check): without a GPU it says so and stops; its dry run on
the CPU runs every check's code (tiny presets, a few steps) and reports them in one JSON."""

import json

import pytest

from avsf.cli import main
from avsf.engine.gpu_check import gpu_check, peak_bf16_tflops


def test_without_a_gpu_the_command_says_so(capsys):
    assert main(["bench", "gpu"]) == 2
    err = capsys.readouterr().err
    assert "no CUDA GPU is visible" in err and "srun --gres=gpu:1" in err


def test_peaks_come_from_the_device_name():
    assert peak_bf16_tflops("NVIDIA H200") == 989.0
    assert peak_bf16_tflops("NVIDIA H100 PCIe") == 756.0
    assert peak_bf16_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert peak_bf16_tflops("NVIDIA L40S") == 362.0 and peak_bf16_tflops("NVIDIA L4") == 121.0
    assert peak_bf16_tflops("Tesla V100-SXM2-16GB") is None  # no bf16 tensor cores


def test_the_dry_run_runs_every_check_and_reports_one_json(tmp_path, smoke_root, capsys):
    out = tmp_path / "gpu.json"
    rc = main(["bench", "gpu", "--dry-run-cpu", "--synthetic-root", str(smoke_root.parent), "--out", str(out),
               "--work-dir", str(tmp_path)])
    printed = json.loads(capsys.readouterr().out)
    report = json.loads(out.read_text())
    assert printed == report and rc == 0 and report["all_ok"] and report["dry_run"]
    for name in ("step_bf16", "step_compiled", "ddp", "loader", "train_small"):
        assert report[name]["ok"], (name, report[name])
    assert report["step_bf16"]["clips_per_s"] > 0 and report["step_bf16"]["forward_gflops_per_clip"] > 0
    assert report["step_compiled"]["compile_backend"] == "eager"
    assert report["ddp"]["processes"] == 2 and report["ddp"]["grads_equal_across_ranks"]
    assert report["loader"]["loader_clips_per_s"] > 0 and report["loader"]["gpu_appetite_clips_per_s"] > 0
    assert report["train_small"]["loss_fell"] and report["train_small"]["steps"] == 4


def test_mfu_is_three_forwards_over_the_peak():
    from avsf.engine.gpu_check import _with_mfu

    step = _with_mfu({"clips_per_s": 100.0}, gflops_per_clip=50.0, peak_tflops=100.0)
    assert step["achieved_tflops"] == pytest.approx(15.0) and step["mfu"] == pytest.approx(0.15)
