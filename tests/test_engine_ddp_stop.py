"""Ranks stop together (issue 19, part 3): a preemption request that reaches one rank only
(Slurm signals one task; a user kills one process group) stops every rank after the same
step, one checkpoint is written, and the resumed run ends with the weights and metrics of an
uninterrupted one. Two gloo processes on the engine fakes."""

from __future__ import annotations

import json
import multiprocessing as mp
import os

import pytest
import torch

from avsf.engine import distributed as ddp

STOP_AFTER = 3  # the rank told to stop learns it at its third step (of 8)



class _StopAt:
    """A stop event that reads set from the `n`-th time the trainer asks (once per step)."""

    def __init__(self, n: int) -> None:
        self.n, self.asked = n, 0

    def is_set(self) -> bool:
        self.asked += 1
        return self.asked >= self.n


def _worker(rank: int, port: int, run_dir: str, stop_rank: int | None, queue) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from test_engine_fakes import install, tiny_config

    patch = pytest.MonkeyPatch()
    install(patch, num_videos=16, batch_norm=False)
    from avsf.engine.train import train

    # 16 videos, 4 clips per rank: 2 steps an epoch, 4 epochs; checkpoints only when stopped
    cfg = tiny_config(**{"solver.epochs": 4, "solver.batch_size": 4, "solver.reference_batch": 8,
                         "solver.warmup_epochs": 0, "model.dropout": 0.0, "checkpoint_every": 0, "eval_every": 100})
    try:
        out = train(cfg, run_dir, stop_event=_StopAt(STOP_AFTER) if rank == stop_rank else None)
        queue.put((rank, json.dumps(out, sort_keys=True, default=str), None))
    except Exception:  # report instead of hanging the parent
        import traceback

        queue.put((rank, None, traceback.format_exc()))


def _run(run_dir, stop_rank=None) -> list[dict]:
    ctx = mp.get_context("spawn")
    queue, port = ctx.Queue(), ddp.free_port()
    procs = [ctx.Process(target=_worker, args=(r, port, str(run_dir), stop_rank, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = sorted(queue.get(timeout=240) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    assert all(err is None for _, _, err in results), [err for _, _, err in results if err]
    return [json.loads(out) for _, out, _ in results]


def _timeless(final: dict) -> dict:
    return {k: v for k, v in final.items() if not any(t in k for t in ("time", "clips_per_s", "peak_mem", "started",
                                                                         "ended", "resumed"))}


def test_a_stop_that_reaches_one_rank_stops_both_at_the_same_step_and_the_resumed_run_matches(tmp_path):
    from avsf.engine.checkpoint import list_checkpoints, load_latest

    stopped = tmp_path / "stopped"
    first = _run(stopped, stop_rank=1)
    assert first[0] == first[1] == {"status": "stopped", "step": STOP_AFTER, "epoch": 1}, first
    # the end of epoch 1 (step 2) and the stop (step 3): one checkpoint for the stop, by rank 0
    assert [p.name for p in list_checkpoints(stopped / "checkpoints")] == ["ckpt-000000002.pt", f"ckpt-{STOP_AFTER:09d}.pt"]
    assert (stopped / "log.txt").read_text().count(f"stop requested: checkpointed at step {STOP_AFTER}") == 1
    resumed = _run(stopped)
    assert "resumed from" in (stopped / "log.txt").read_text()
    whole = _run(tmp_path / "whole")
    assert _timeless(resumed[0]) == _timeless(whole[0])
    a = load_latest(stopped / "checkpoints")[0]["model"]
    b = load_latest(tmp_path / "whole" / "checkpoints")[0]["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
