"""Kill a CPU training run with SIGKILL at a random step after a checkpoint exists, rerun the
same command, and check that the final weights and metrics equal those of an uninterrupted run
with the same seed, bit for bit. Runs `python -m avsf train` in subprocesses (real model, real
data loader with workers, the built-in dataset)."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from avsf.engine.checkpoint import list_checkpoints, load_latest
from avsf.engine.train import TIMING_FIELDS

REPO = Path(__file__).resolve().parents[1]
# small but complete: AVS negatives, DropPathway draws, 2 loader workers, 2 epochs of
# 6 steps (192 videos per split), checkpoints every 3 steps
ARGS = ["--preset", "avslowfast_tiny", "--seed", "3",
        "--set", f"data.synthetic_root={REPO / 'data' / 'synthetic'}",
        "--set", "solver.epochs=2", "--set", "solver.batch_size=32", "--set", "solver.reference_batch=32",
        "--set", "checkpoint_every=3", "--set", "keep_checkpoints=2", "--set", "eval_every=1",
        "--set", "data.num_temporal_views=1", "--set", "data.num_workers=2", "--set", "data.limit_videos=192"]


def _cmd(out: Path) -> list[str]:
    return [sys.executable, "-m", "avsf", "train", *ARGS, "--out", str(out)]


def _run(out: Path) -> None:
    proc = subprocess.run(_cmd(out), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _metrics(run: Path) -> list[dict]:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in line.items() if k not in TIMING_FIELDS} for line in lines]


def _final(run: Path) -> dict:
    final = json.loads((run / "final.json").read_text())
    return {k: v for k, v in final.items() if not k.endswith("wall_time_s")}


def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path):
    # the interrupted run first: the uninterrupted one then runs while nothing else does
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(killed), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.time() + 400
    while not list_checkpoints(killed / "checkpoints"):
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    time.sleep(random.uniform(0.0, 3.0))  # a random step after the first checkpoint
    os.killpg(proc.pid, signal.SIGKILL)  # the trainer and its loader workers, no clean exit
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "final.json").exists(), "the run finished before the kill: the test proves nothing"
    state, _ = load_latest(killed / "checkpoints")
    killed_at = int(state["step"])

    _run(killed)  # the same command again: resumes
    assert f"resumed from {killed / 'checkpoints'}" in (killed / "log.txt").read_text()

    full = tmp_path / "full"
    _run(full)

    a, b = load_latest(full / "checkpoints")[0], load_latest(killed / "checkpoints")[0]
    assert a["step"] == b["step"] > killed_at
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), f"{k} differs after resuming from step {killed_at}"
    for k, v in a["optimizer"]["state"].items():
        assert torch.equal(v["momentum_buffer"], b["optimizer"]["state"][k]["momentum_buffer"])
    assert _metrics(full) == _metrics(killed)
    assert _final(full) == _final(killed)
