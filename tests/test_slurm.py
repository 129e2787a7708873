"""The launcher on a real Slurm (slurm/local_cluster.sh): job arrays, preemption and resume,
caching, errors. The jobs run the real trainer on the smoke-scale presets.

.ci/run starts the cluster and exports AVSF_SLURM=1: then an unreachable cluster FAILS these
tests. Without AVSF_SLURM (a laptop without Slurm) they are skipped, saying how to run them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from avsf import launch
from avsf.config import RunConfig
from avsf.presets import get_preset

pytestmark = pytest.mark.slurm

JOB_FN = "avsf.engine.train:train"
SYNTH_ROOT = str(launch.REPO_ROOT / "data" / "synthetic")  # shared with other tests' smoke runs
# Fields of final.json that measure the machine, not the computation.
TIMING_KEYS = ("time", "clips_per_s", "peak_mem")


def _cluster_problem() -> str | None:
    if shutil.which("sbatch") is None:
        return "sbatch is not on PATH"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "sinfo timed out"
    if out.returncode != 0:
        return f"sinfo failed: {out.stderr.strip()[:300]}"
    if not any(s.strip() in ("idle", "mixed", "allocated", "completing") for s in out.stdout.split()):
        return f"no usable node (sinfo says {out.stdout.split()})"
    return None


@pytest.fixture(scope="module", autouse=True)
def slurm_cluster():
    if not os.environ.get("SLURM_CONF") and Path("/tmp/avsf-slurm/slurm.conf").is_file() \
            and not Path("/etc/slurm/slurm.conf").exists():
        os.environ["SLURM_CONF"] = "/tmp/avsf-slurm/slurm.conf"
    problem = _cluster_problem()
    if problem is None:
        return
    message = f"Slurm cluster unreachable ({problem}); start one with `slurm/local_cluster.sh start`"
    if os.environ.get("AVSF_SLURM") == "1":
        pytest.fail(f"AVSF_SLURM=1 but the {message}", pytrace=False)
    pytest.skip(f"{message} and set AVSF_SLURM=1 (as .ci/run does) to make these tests mandatory")


@pytest.fixture(scope="module")
def tiny_split(tmp_path_factory) -> Path:
    """Split files for 4 classes of the built-in dataset: 8 training, 4 val and 4 test videos,
    so that a run trains 20 steps of 4 clips (enough for the preemption test to act twice mid-run) and tests in seconds of CPU."""
    import task_runs
    from avsf.data.synthetic import ensure_synthetic

    src = Path(ensure_synthetic(SYNTH_ROOT, "smoke", 0))
    return task_runs.four_class_split(src, tmp_path_factory.mktemp("tiny_split"))


def _cfg(preset: str, seed: int, split_dir: Path, **extra) -> RunConfig:
    overrides = {"seed": seed, "solver.epochs": 10, "solver.batch_size": 4, "solver.reference_batch": 4,
                 "solver.warmup_epochs": 1, "checkpoint_every": 1, "eval_every": 100, "log_every": 1,
                 "data.synthetic_root": SYNTH_ROOT, "data.split_dir": str(split_dir),
                 "data.num_temporal_views": 1, "data.num_workers": 0, "device": "cpu", **extra}
    return get_preset(preset).with_overrides({k: str(v) for k, v in overrides.items()})


@pytest.fixture(scope="module")
def sweep_configs(tiny_split) -> list[RunConfig]:
    return [_cfg("slowfast_tiny", 0, tiny_split), _cfg("slowfast_tiny", 1, tiny_split),
            _cfg("audio_only_tiny", 0, tiny_split), _cfg("audio_only_tiny", 1, tiny_split)]


def _squeue(job_id: str) -> tuple[str, str]:
    out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T %r"], capture_output=True, text=True)
    parts = out.stdout.split()
    return (parts[0], parts[1]) if len(parts) == 2 else ("", "")


def _expedite_requeued(frame) -> None:
    """Slurm holds a requeued job for ~2 minutes (BeginTime); the test cluster's admin lets it go."""
    for job_id in frame.loc[frame["state"] == "pending", "job_id"].dropna():
        state, reason = _squeue(str(job_id))
        if state == "PENDING" and reason == "BeginTime":
            subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True)


def _resumed_from(run_dir: Path, attempt: int) -> str | None:
    """The newest checkpoint when `attempt` started, from the launcher's log."""
    for line in (run_dir / "launch.log").read_text().splitlines():
        if f"attempt {attempt} started" in line:
            return line.rsplit("newest checkpoint: ", 1)[-1]
    return None


def _comparable(final: dict) -> dict:
    return {k: v for k, v in final.items() if not any(t in k for t in TIMING_KEYS)}


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory, sweep_configs):
    sweep_dir = tmp_path_factory.mktemp("slurm_sweep")
    report = launch.submit(sweep_configs, backend="slurm", sweep_dir=sweep_dir, cluster="local", max_parallel=2,
                           job_fn=JOB_FN)
    frame = launch.wait(sweep_dir, timeout_s=600, poll_s=1.0, on_poll=_expedite_requeued)
    return sweep_dir, report, frame


def test_sweep_of_four_runs_is_one_job_array_and_all_results_come_back(finished_sweep, sweep_configs):
    sweep_dir, report, frame = finished_sweep
    assert len(report.submitted) == 4
    array_ids = {j.split("_")[0] for j in report.jobs}
    assert len(array_ids) == 1 and sorted(j.split("_")[1] for j in report.jobs) == ["0", "1", "2", "3"]
    sbatch = next((sweep_dir / launch.SUBMITIT_DIR).rglob("*_submission.sh")).read_text()
    assert "#SBATCH --array=0-3%2" in sbatch  # the cap on runs at once
    assert list(frame["state"]) == ["done"] * 4, frame[["run", "state", "error"]].to_string()
    for cfg in sweep_configs:
        final = json.loads((launch.run_dir_for(cfg, sweep_dir) / "final.json").read_text())
        assert 0.0 <= final["top1"] <= 100.0  # percent
        row = frame.set_index("run").loc[launch.run_dir_for(cfg, sweep_dir).name]
        assert row["metric.top1"] == final["top1"] and row["model.arch"] == cfg.model.arch


def test_second_submission_of_a_finished_sweep_submits_nothing(finished_sweep, sweep_configs):
    sweep_dir, _, _ = finished_sweep
    again = launch.submit(sweep_configs, backend="slurm", sweep_dir=sweep_dir, cluster="local", job_fn=JOB_FN)
    assert again.submitted == [] and again.jobs == [] and len(again.done) == 4


def test_preempted_run_resumes_from_its_checkpoint_and_matches_the_undisturbed_run(finished_sweep, sweep_configs,
                                                                                   tmp_path):
    sweep_dir, _, _ = finished_sweep
    cfg = sweep_configs[0]  # the same config in another sweep directory: the same computation
    report = launch.submit([cfg], backend="slurm", sweep_dir=tmp_path, cluster="local", job_fn=JOB_FN)
    job_id = report.jobs[0]
    run_dir = launch.run_dir_for(cfg, tmp_path)
    events: list[str] = []

    def preempt(frame):
        _expedite_requeued(frame)
        state = launch._read_json(run_dir / "state.json") or {}
        ckpts = sorted(p.name for p in (run_dir / "checkpoints").glob("*") if not p.name.startswith(".")) \
            if (run_dir / "checkpoints").is_dir() else []
        if state.get("state") != "running" or not ckpts:
            return
        if not events:  # 1) the timeout/preemption signal: checkpoint now, requeue
            subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
            events.append(f"usr2 after {ckpts[-1]}")
        elif len(events) == 1 and state.get("attempts") == 2 and ckpts[-1] != _resumed_from(run_dir, 2):
            # 2) a node loss: Slurm requeues the job and the process dies without a warning;
            #    the job must resume from the newest checkpoint on disk
            subprocess.run(["scontrol", "requeue", job_id], check=True)
            os.kill(int(state["pid"]), signal.SIGKILL)
            events.append(f"requeue + SIGKILL after {ckpts[-1]}")

    frame = launch.wait(tmp_path, timeout_s=600, poll_s=0.5, on_poll=preempt)
    row = frame.iloc[0]
    assert row["state"] == "done", row["error"]
    assert len(events) == 2, events
    assert row["attempts"] == 3 and row["job_id"] == job_id  # the same job, requeued twice
    log = (run_dir / "log.txt").read_text()
    resumed = re.findall(r"resumed from (\S+)", log)
    assert len(resumed) == 2 and len(set(resumed)) == 2, log  # never from scratch, nor from a stale one
    assert "stop requested" in log
    undisturbed = json.loads((launch.run_dir_for(cfg, sweep_dir) / "final.json").read_text())
    final = json.loads((run_dir / "final.json").read_text())
    assert _comparable(final) == _comparable(undisturbed)


def test_a_slurm_run_equals_the_same_config_trained_in_this_process(finished_sweep, sweep_configs, tmp_path):
    """Issue 17, part 2: the Slurm door gives the final.json and metrics.jsonl of `train()` here,
    at the thread count the job recorded (tests/test_run_identity.py covers the other doors)."""
    import torch

    import task_runs
    from avsf.engine.train import train

    sweep_dir, _, _ = finished_sweep
    cfg = sweep_configs[0]
    slurm_dir = launch.run_dir_for(cfg, sweep_dir)
    threads = json.loads((slurm_dir / "final.json").read_text())["environment"]["torch_threads"]
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        train(cfg, tmp_path / "here")
    finally:
        torch.set_num_threads(before)
    assert json.loads((tmp_path / "here" / "final.json").read_text())["environment"]["torch_threads"] == threads
    assert task_runs.comparable(tmp_path / "here") == task_runs.comparable(slurm_dir)


def test_a_failing_run_reports_its_error_in_status(tiny_split, tmp_path, capsys):
    cfg = _cfg("slowfast_tiny", 0, tiny_split, **{"data.dataset": "kinetics", "data.root": str(tmp_path / "no_kinetics"),
                                                 "data.split_dir": ""})
    launch.submit([cfg], backend="slurm", sweep_dir=tmp_path, cluster="local", job_fn=JOB_FN)
    frame = launch.wait(tmp_path, timeout_s=120, poll_s=0.5)
    row = frame.iloc[0]
    assert row["state"] == "failed"
    assert "no_kinetics" in row["error"]  # the trainer's message names the missing path
    from avsf.cli import main

    capsys.readouterr()
    assert main(["status", str(tmp_path)]) == 0
    assert "no_kinetics" in capsys.readouterr().out


def test_a_two_process_run_trains_as_one_ddp_group_from_the_slurm_environment(tiny_split, tmp_path):
    """AVSlowFast tiny (AVS, DropPathway) as 2 Slurm tasks of one job: one DDP group, and the same
    final.json and weights as the one-process run it stands for (solver.accumulate=2, issue 19)."""
    import dataclasses

    profile = dataclasses.replace(launch.load_cluster("local"), cpu_tasks_per_node=2)  # gloo stands in for NCCL
    cfg = _cfg("avslowfast_tiny", 0, tiny_split, **{"solver.epochs": 2, "tensorboard": "false"})
    report = launch.submit([cfg], backend="slurm", sweep_dir=tmp_path, cluster=profile, job_fn=JOB_FN)
    sbatch = next((tmp_path / launch.SUBMITIT_DIR).rglob("*_submission.sh")).read_text()
    assert "#SBATCH --ntasks-per-node=2" in sbatch
    frame = launch.wait(tmp_path, timeout_s=400, poll_s=1.0)
    row = frame.iloc[0]
    assert row["state"] == "done", row["error"]
    run_dir = launch.run_dir_for(cfg, tmp_path)
    assert launch._read_json(run_dir / "state.json")["world_size"] == 2
    assert "2 process(es)" in (run_dir / "log.txt").read_text()  # the trainer saw a group of two
    starts = [l for l in (run_dir / "launch.log").read_text().splitlines() if "started" in l]
    assert len(starts) == 1 and report.jobs[0] in starts[0]  # rank 0 alone keeps the books
    from avsf.engine.checkpoint import load_latest
    from avsf.engine.train import train

    one = train(cfg.with_overrides({"solver.accumulate": 2}), tmp_path / "one_process")
    two = json.loads((run_dir / "final.json").read_text())
    for key in ("top1", "top5", "per_class_accuracy", "confusion_matrix", "step"):
        assert two[key] == one[key], key
    a, b = (load_latest(d / "checkpoints")[0]["model"] for d in (run_dir, tmp_path / "one_process"))
    assert max(float((a[k].double() - b[k].double()).abs().max()) for k in a) <= 1e-5


def test_a_transfer_row_is_queued_at_once_and_waits_for_its_pretraining_run(tmp_path, monkeypatch):
    """The grid runner's Slurm door: the whole table goes out in one call, each transfer row as
    a job that waits (afterok) for its pretraining job; one whose pretraining fails is cancelled
    and reported as not run. The job stands in for the trainer (tests/test_grid.py)."""
    from avsf import grid as G

    job = f"{Path(__file__).resolve().parent / 'test_grid.py'}:ordered_train"
    monkeypatch.setenv("AVSF_TEST_JOB_S", "4")  # sbatch exports the environment to the jobs
    monkeypatch.setenv("AVSF_TEST_FAIL_PRESET", "slowfast_pretrain_tiny")
    grid = G.build_grid("table8_ssl", scale="smoke", seeds=[0], overrides=["solver.epochs=1"],
                        rows=["probe_avsf_avs_rot_ucf101", "probe_sf_rot_ucf101"])
    pretrain, transfer = grid.levels()
    assert len(pretrain) == 2 and len(transfer) == 2
    submitted = G.run_grid(grid, backend="slurm", cluster="local", sweep_dir=tmp_path, job_fn=job, wait=False)
    assert set(submitted.states.values()) <= {"pending", "running"}  # all four queued by one call
    launches = {r.name: launch._read_json(tmp_path / r.name / "launch.json") for r in grid.runs}
    scripts = [p.read_text() for p in (tmp_path / launch.SUBMITIT_DIR).rglob("*_submission.sh")]
    for r in transfer:
        source_job = launches[r.after[0]]["job_id"]
        assert launches[r.name]["after"] == [source_job]
        assert any(f"#SBATCH --dependency=afterok:{source_job}\n" in s and "#SBATCH --kill-on-invalid-dep=yes" in s
                   for s in scripts)
        state, reason = _squeue(launches[r.name]["job_id"])
        # waiting on its source; the one whose source fails at once may be cancelled already
        assert (state, reason) == ("PENDING", "Dependency") or r.config.name == "slowfast_tiny", (state, reason)
    launch.wait(tmp_path, runs=grid.names, timeout_s=300, poll_s=1.0)
    done = G.outcome(grid, tmp_path)
    ok, bad = (next(r for r in transfer if r.config.name == n) for n in ("avslowfast_tiny", "slowfast_tiny"))
    assert done.states[ok.name] == "done" and done.states[bad.name] == G.NOT_RUN, done.states
    assert ok.after[0] not in done.failures
    assert done.failures[bad.after[0]] == "dataset root /nowhere/slowfast_pretrain_tiny does not exist"
    assert done.failures[bad.name].startswith(f"not run: it starts from {bad.after[0]}, which failed (dataset root")
    source = json.loads((tmp_path / ok.after[0] / "final.json").read_text())
    assert source["ended"] <= json.loads((tmp_path / ok.name / "final.json").read_text())["started"]


def hog_memory(cfg: RunConfig, run_dir, **_) -> dict:
    """A job that grows by 64 MiB every 0.1 s up to 4 GiB: past any small --mem in seconds."""
    chunks = []
    for _ in range(64):
        chunks.append(bytearray(64 * 2**20))  # bytearray zero-fills: the pages are touched, so resident
        time.sleep(0.1)
    (Path(run_dir) / "final.json").write_text(json.dumps({"survived_gib": len(chunks) / 16}))
    return {}


def test_a_job_over_its_memory_limit_is_reported_as_out_of_memory_with_the_limit(tmp_path):
    profile = dataclasses.replace(launch.load_cluster("local"), mem_gb=0.75)
    cfg = get_preset("slowfast_tiny").with_overrides({"seed": "7"})
    launch.submit([cfg], backend="slurm", sweep_dir=tmp_path, cluster=profile, job_fn=f"{Path(__file__).resolve()}:hog_memory")
    frame = launch.wait(tmp_path, timeout_s=180, poll_s=0.5)
    row = frame.iloc[0]
    assert row["state"] == "failed", row.to_dict()
    assert row["reason"].startswith("out of memory: Slurm killed the job at its memory limit (0.75 GiB asked (mem_gb)"), \
        row["reason"]
    assert "of 0.75 GiB" in row["reason"] and "lower solver.batch_size" in row["reason"]
