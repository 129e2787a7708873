"""The launcher without a cluster: caching, claims, failures, preemption, status, CLI.

The job function here is a stand-in for the trainer with the same contract (resume from the
newest checkpoint in run_dir, checkpoint and return when ``stop_event`` is set, write
final.json at the end), fast enough to run dozens of times. The real trainer runs under the
launcher in tests/test_slurm.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from avsf import launch
from avsf.cli import main
from avsf.config import RunConfig
from avsf.errors import UserError
from avsf.presets import get_preset

FAKE_JOB = f"{Path(__file__).resolve()}:fake_train"
PY = sys.executable


def fake_train(cfg: RunConfig, run_dir, *, stop_event: threading.Event | None = None) -> dict:
    """The trainer's contract in miniature. ``solver.epochs`` steps of ``solver.base_lr``
    seconds each; the state is a number updated deterministically from (seed, step);
    ``data.root == "/fail"`` fails like a missing dataset."""
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    ckpt_dir.mkdir(exist_ok=True)
    with open(run_dir / "executions.txt", "a") as f:
        f.write(f"start {os.getpid()} {time.time()}\n")
    log = open(run_dir / "log.txt", "a")
    if cfg.data.root == "/fail":
        log.write("building dataset from /fail\n")
        log.close()
        raise FileNotFoundError("dataset root /fail does not exist; pass data.root=<your dataset>")
    ckpts = sorted(ckpt_dir.glob("step-*.json"))
    step, value = 0, cfg.seed + 1
    if ckpts:
        state = json.loads(ckpts[-1].read_text())
        step, value = state["step"], state["value"]
        log.write(f"resumed from {ckpts[-1].name} (step {step})\n")
    else:
        log.write("fresh start\n")
    log.flush()
    while step < cfg.solver.epochs:
        time.sleep(cfg.solver.base_lr)
        step += 1
        value = (value * 31 + step) % 100003
        (ckpt_dir / f".tmp-{step}").write_text(json.dumps({"step": step, "value": value}))
        os.replace(ckpt_dir / f".tmp-{step}", ckpt_dir / f"step-{step:05d}.json")
        if stop_event is not None and stop_event.is_set():
            log.write(f"stop requested: checkpointed at step {step}\n")
            log.close()
            with open(run_dir / "executions.txt", "a") as f:
                f.write(f"stop {os.getpid()} {time.time()}\n")
            return {"status": "stopped", "step": step}
    final = {"top1": value / 100003, "steps": step}
    (run_dir / "final.json").write_text(json.dumps(final))
    with open(run_dir / "executions.txt", "a") as f:
        f.write(f"end {os.getpid()} {time.time()}\n")
    log.close()
    return final


def _cfg(seed: int = 0, *, steps: int = 3, step_s: float = 0.0, fail: bool = False) -> RunConfig:
    overrides = [f"seed={seed}", f"solver.epochs={steps}", f"solver.base_lr={step_s}"]
    if fail:
        overrides.append("data.root=/fail")
    return get_preset("avslowfast_tiny").with_overrides(overrides)


def _expected_top1(cfg: RunConfig) -> float:
    value = cfg.seed + 1
    for step in range(1, cfg.solver.epochs + 1):
        value = (value * 31 + step) % 100003
    return value / 100003


def _starts(run_dir: Path) -> int:
    return sum(line.startswith("start") for line in (run_dir / "executions.txt").read_text().splitlines())


# --- profiles -------------------------------------------------------------------------
def test_shipped_profiles_load_and_multi_gpu_gets_a_task_per_gpu():
    local = launch.load_cluster("local")
    assert local.gpus_per_node == 0 and local.tasks_per_node == 1
    gpu = launch.load_cluster("gpu_cluster.example")
    assert gpu.gpus_per_node * gpu.nodes == 128  # the paper's 128-GPU recipe
    assert gpu.tasks_per_node == gpu.gpus_per_node
    assert gpu.signal_delay_s >= 120


def test_slurm_executor_parameters_come_from_the_profile(tmp_path, monkeypatch):
    monkeypatch.setattr(launch.shutil, "which", lambda cmd: "/usr/bin/" + cmd)  # submitit looks for srun
    profile = launch.load_cluster("gpu_cluster.example")
    ex = launch._make_executor(backend="slurm", folder=tmp_path / "%j", profile=profile, max_parallel=3,
                               job_name="sweep")
    params = ex._executor.parameters
    assert params["ntasks_per_node"] == 8 and params["gpus_per_node"] == 8 and params["nodes"] == 16
    assert params["array_parallelism"] == 3 and params["partition"] == profile.partition
    assert params["signal_delay_s"] == profile.signal_delay_s and params["time"] == profile.timeout_min
    text = ex._executor._make_submission_file_text("python job", "uid")
    assert f"#SBATCH --signal=USR2@{profile.signal_delay_s}" in text  # the signal NCCL does not catch
    assert "#SBATCH --ntasks-per-node=8" in text


@pytest.mark.parametrize("body, needle", [
    ("gpus_per_nod: 8\n", "unknown field(s) gpus_per_nod"),
    ("timeout_min: 1\nsignal_delay_s: 90\n", "must be shorter than"),
    ("nodes: 0\n", "nodes=0 must be a positive integer"),
])
def test_bad_profiles_say_what_is_wrong(tmp_path, body, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    with pytest.raises(UserError) as e:
        launch.load_cluster(path)
    assert needle in str(e.value)


def test_unknown_profile_and_backend_list_the_known_ones(tmp_path):
    with pytest.raises(UserError, match="known profiles: .*local"):
        launch.load_cluster("nosuch")
    with pytest.raises(UserError, match="choose one of debug, local, slurm"):
        launch.submit([_cfg()], backend="kubernetes", sweep_dir=tmp_path, job_fn=FAKE_JOB)


# --- caching and failures (debug backend: in this process) -----------------------------
def test_debug_sweep_runs_once_and_collects_metrics(tmp_path):
    cfgs = [_cfg(seed) for seed in range(3)]
    report = launch.submit(cfgs + cfgs[:1], backend="debug", sweep_dir=tmp_path, job_fn=FAKE_JOB)
    assert len(report.submitted) == 3  # a duplicate config is one run
    frame = launch.status(tmp_path)
    assert list(frame["state"]) == ["done"] * 3
    by_seed = frame.set_index("seed")
    for cfg in cfgs:
        assert by_seed.loc[cfg.seed, "metric.top1"] == pytest.approx(_expected_top1(cfg))
        assert by_seed.loc[cfg.seed, "run"] == launch.run_dir_for(cfg, tmp_path).name
    again = launch.submit(cfgs, backend="debug", sweep_dir=tmp_path, job_fn=FAKE_JOB)
    assert again.submitted == [] and len(again.done) == 3
    assert all(_starts(launch.run_dir_for(c, tmp_path)) == 1 for c in cfgs)


def test_failed_run_shows_its_error_and_reruns_only_on_request(tmp_path, capsys):
    bad = _cfg(fail=True)
    launch.submit([bad], backend="debug", sweep_dir=tmp_path, job_fn=FAKE_JOB)
    row = launch.status(tmp_path).iloc[0]
    assert row["state"] == "failed"
    assert "dataset root /fail does not exist" in row["error"]
    assert "building dataset from /fail" in row["error"]  # the tail of the run's log
    capsys.readouterr()
    report = launch.submit([bad], backend="debug", sweep_dir=tmp_path, job_fn=FAKE_JOB)
    assert report.submitted == [] and list(report.failed) == [str(launch.run_dir_for(bad, tmp_path))]
    assert "dataset root /fail does not exist" in capsys.readouterr().err
    report = launch.submit([bad], backend="debug", sweep_dir=tmp_path, job_fn=FAKE_JOB, retry_failed=True)
    assert len(report.submitted) == 1
    row = launch.status(tmp_path).iloc[0]
    assert row["submissions"] == 2 and row["state"] == "failed"


def _claimed_without_job(cfg, sweep_dir, backend: str):
    """The run dir a submitter leaves between its claim and the queue's answer (no job id yet)."""
    run_dir = launch.run_dir_for(cfg, sweep_dir)
    run_dir.mkdir(parents=True)
    launch._write_json(run_dir / "launch.json", {"backend": backend, "job_id": None, "submissions": 1,
                                                 "config": cfg.to_dict()})
    return run_dir


def test_state_survives_a_crashed_submitter(tmp_path):
    cfg = _cfg()
    # the submitter died between its claim and the queue's answer
    run_dir = _claimed_without_job(cfg, tmp_path, "slurm")
    st = launch.run_state(run_dir)
    assert st["state"] == "failed" and "died before the job was queued" in st["error"]
    report = launch.submit([cfg], backend="debug", sweep_dir=tmp_path, job_fn=FAKE_JOB, retry_failed=True)
    assert len(report.submitted) == 1 and launch.run_state(run_dir)["state"] == "done"


def test_a_claimed_run_is_pending_not_failed(tmp_path):
    from filelock import FileLock

    cfg = _cfg()
    run_dir = _claimed_without_job(cfg, tmp_path, "local")
    with FileLock(str(run_dir / ".claim.lock")):  # another submitter is between claim and queue
        assert launch.run_state(run_dir)["state"] == "pending"
        report = launch.submit([cfg], backend="debug", sweep_dir=tmp_path, job_fn=FAKE_JOB)
        assert report.submitted == [] and report.active == [str(run_dir)]


_CONCURRENT = """
import sys
from avsf import launch
from avsf.presets import get_preset
cfgs = [get_preset("avslowfast_tiny").with_overrides([f"seed={s}", "solver.epochs=4", "solver.base_lr=0.05"])
        for s in range(4)]
sys.stdin.readline()  # both processes start submitting at the same moment
r = launch.submit(cfgs, backend="debug", sweep_dir=sys.argv[1], job_fn=sys.argv[2], verbose=False)
print(len(r.submitted))
"""


def test_two_submitters_at_once_submit_each_run_once(tmp_path):
    procs = [subprocess.Popen([PY, "-c", _CONCURRENT, str(tmp_path), FAKE_JOB], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    time.sleep(1.5)  # let both import
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    counts = [int(p.communicate(timeout=120)[0].strip().splitlines()[-1]) for p in procs]
    assert sum(counts) == 4
    frame = launch.status(tmp_path)
    assert list(frame["state"]) == ["done"] * 4 and list(frame["submissions"]) == [1] * 4
    assert all(_starts(tmp_path / run) == 1 for run in frame["run"])


# --- the local backend: real processes through submitit ---------------------------------
def test_local_backend_caps_parallel_runs_and_resumes_after_preemption(tmp_path):
    cfgs = [_cfg(seed, steps=6, step_s=0.25) for seed in range(3)]
    report = launch.submit(cfgs, backend="local", sweep_dir=tmp_path, job_fn=FAKE_JOB, max_parallel=1)
    assert len(report.submitted) == 3 and len(report.jobs) == 3
    assert launch.submit(cfgs, backend="local", sweep_dir=tmp_path, job_fn=FAKE_JOB).submitted == []

    # preempt whichever run trains first, once it has a checkpoint: USR2 as Slurm would send it
    preempted: dict[str, Path] = {}

    def preempt(frame):
        if preempted:
            return
        for run in frame.loc[frame["state"] == "running", "run"]:
            run_dir = tmp_path / run
            state = launch._read_json(run_dir / "state.json") or {}
            if any((run_dir / "checkpoints").glob("step-*.json")) and state.get("pid"):
                os.kill(state["pid"], signal.SIGUSR2)
                preempted["run"] = run_dir
                return

    frame = launch.wait(tmp_path, timeout_s=120, poll_s=0.2, on_poll=preempt)
    assert list(frame["state"]) == ["done"] * 3, frame[["run", "state", "error"]]
    for cfg in cfgs:  # the preempted run ends where an undisturbed one would
        assert frame.set_index("seed").loc[cfg.seed, "metric.top1"] == pytest.approx(_expected_top1(cfg))
    run_dir = preempted["run"]
    log = (run_dir / "log.txt").read_text()
    assert "stop requested: checkpointed at step" in log and "resumed from step-" in log
    assert frame.set_index("run").loc[run_dir.name, "attempts"] == 2
    assert frame.set_index("run").loc[run_dir.name, "failures"] == 0  # a preemption is no failed attempt
    # max_parallel=1: no two runs trained at the same time (one span per start..end or stop)
    spans = []
    for cfg in cfgs:
        times = [float(line.split()[2]) for line in
                 (launch.run_dir_for(cfg, tmp_path) / "executions.txt").read_text().splitlines()]
        spans += list(zip(times[0::2], times[1::2]))
    assert len(spans) == 4  # three runs, one of them in two pieces
    spans.sort()
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:]))


# --- CLI ------------------------------------------------------------------------------
def test_status_cli_prints_states_and_errors(tmp_path, capsys):
    launch.submit([_cfg(0), _cfg(1, fail=True)], backend="debug", sweep_dir=tmp_path, job_fn=FAKE_JOB)
    capsys.readouterr()
    assert main(["status", str(tmp_path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sorted(r["state"] for r in rows) == ["done", "failed"]
    assert main(["status", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "done" in out and "failed" in out and "dataset root /fail does not exist" in out
    assert main(["status", str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_sweep_cli_rejects_bad_arguments(tmp_path, capsys):
    assert main(["sweep", "no_such_experiment", "--backend", "debug", "--scale", "smoke",
                 "--out", str(tmp_path)]) == 2
    assert "no_such_experiment" in capsys.readouterr().err
    assert main(["sweep", "no_such_experiment", "--backend", "debug", "--cluster", "nosuch",
                 "--out", str(tmp_path)]) == 2
    assert "cluster profile 'nosuch' not found" in capsys.readouterr().err


def test_sweep_cli_submits_an_experiment_once(tmp_path, capsys):
    from avsf.experiments import get_grid

    args = ["sweep", "ablate_droppath", "--backend", "debug", "--scale", "smoke", "--out", str(tmp_path),
            "--seeds", "0,1", "--job-fn", FAKE_JOB, "--set", "solver.epochs=2", "--set", "solver.base_lr=0"]
    grid = get_grid("ablate_droppath", scale="smoke", seeds=[0, 1], overrides=["solver.epochs=2", "solver.base_lr=0"])
    assert main(args + ["--dry-run"]) == 0
    listed = capsys.readouterr().out.split()
    assert listed == [str(launch.run_dir_for(c, tmp_path)) for c in grid] and not list(tmp_path.iterdir())
    assert main(args) == 0
    assert f"submitted {len(grid)}," in capsys.readouterr().err
    frame = launch.status(tmp_path)
    assert sorted(frame["run"]) == sorted(launch.run_dir_for(c, tmp_path).name for c in grid)
    assert set(frame["state"]) == {"done"}
    assert main(args) == 0
    assert f"submitted 0, already done {len(grid)}" in capsys.readouterr().err


def test_a_job_killed_without_warning_is_failed_with_its_log_tail(tmp_path):
    cfg = _cfg(0, steps=40, step_s=0.25)
    launch.submit([cfg], backend="local", sweep_dir=tmp_path, job_fn=FAKE_JOB)
    run_dir = launch.run_dir_for(cfg, tmp_path)
    deadline = time.time() + 60
    while not list((run_dir / "checkpoints").glob("step-*.json")):
        assert time.time() < deadline, "the job never started training"
        time.sleep(0.1)
    state = launch._read_json(run_dir / "state.json")
    os.kill(state["pid"], signal.SIGKILL)  # e.g. the OOM killer: no signal handler runs
    frame = launch.wait(tmp_path, timeout_s=60, poll_s=0.2)
    row = frame.iloc[0]
    assert row["state"] == "failed" and row["note"] == "process ended"
    assert "ended without writing final.json" in row["error"] and "fresh start" in row["error"]
    assert launch.submit([cfg], backend="local", sweep_dir=tmp_path, job_fn=FAKE_JOB).submitted == []


def test_a_failure_reason_is_one_line():
    assert launch.exception_reason(UserError("dataset root /x does not exist\nsecond line")) == \
        "dataset root /x does not exist"
    assert launch.exception_reason(RuntimeError("out of memory")) == "RuntimeError: out of memory"
    assert launch.exception_reason(KeyboardInterrupt()) == "KeyboardInterrupt"
    # a state.json written before the launcher kept a reason: read from the error tail
    tail = ("epoch 1 loss 2.3\nTraceback (most recent call last):\n  File \"train.py\", line 3, in <module>\n"
            "avsf.errors.UserError: dataset root /x does not exist\n")
    assert launch.failure_reason(tail) == "dataset root /x does not exist"
    assert launch.failure_reason("step 3\nRuntimeError: CUDA error: out of memory\n") == \
        "RuntimeError: CUDA error: out of memory"
    assert launch.failure_reason("killed\n\n") == "killed" and launch.failure_reason("") == "unknown error (no log)"
