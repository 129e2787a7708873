"""The real model under DDP (issue 19, part 1): AVSlowFast tiny with AVS at res3/res4/res5 and
DropPathway, on the built-in data, in two gloo processes without find_unused_parameters,
against one process computing the same step with solver.accumulate=2.

What "the same step" means with BN and AVS: each DDP process normalises its own share of the
batch and draws its AVS negatives from it, so a one-process run on the whole batch at once is
another computation. solver.accumulate=2 splits the step's batch as two processes would (the
same items, seeds, BN statistics and negatives per share) and averages the gradients, and its BN
running statistics follow the first share as DDP keeps rank 0's, so its weights and buffers equal
the DDP run's up to the order of the gradient sums (0 difference measured here). The same for the
classifier in both DropPathway modes and with OGM-GE or Gradient-Blending, the pretraining task (AVS + rotation) and the AVA detector.
A one-process run on the whole batch of 8 at once differs by 0.16 after the same 8 steps."""

import multiprocessing as mp
import os

import pytest
import torch

from avsf.engine import distributed as ddp
from avsf.models.droppathway import draw_droppathway

EPOCHS = 2  # the AVS curriculum switches to hard negatives halfway



def _cfg(smoke_parent: str, overrides: dict):
    from avsf.presets import get_preset

    overrides = dict(overrides)
    preset = overrides.pop("preset", "avslowfast_tiny")
    base = {"data.synthetic_root": smoke_parent, "data.limit_videos": 32, "data.num_workers": 0,
            "solver.epochs": EPOCHS, "solver.batch_size": 4, "solver.warmup_epochs": 0, "eval_every": EPOCHS,
            "checkpoint_every": 0, "tensorboard": False, "data.num_temporal_views": 1}
    return get_preset(preset).with_overrides({**base, **overrides})


def _worker(rank: int, world: int, port: int, run_dir: str, smoke_parent: str, overrides: dict, queue) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from avsf.engine.train import train

    try:
        final = train(_cfg(smoke_parent, overrides), run_dir)
        queue.put((rank, final.get("top1"), None))
    except Exception as e:  # noqa: BLE001 - reported, not hung
        import traceback

        queue.put((rank, None, f"{e!r}\n{traceback.format_exc()}"))


def _run(ctx, world: int, run_dir, smoke_parent, overrides: dict) -> list:
    queue, port = ctx.Queue(), ddp.free_port()
    procs = [ctx.Process(target=_worker, args=(r, world, port, str(run_dir), smoke_parent, overrides, queue))
             for r in range(world)]
    for p in procs:
        p.start()
    results = sorted(queue.get(timeout=300) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    assert all(err is None for _, _, err in results), [err for _, _, err in results if err]
    return results


def _steps(run_dir) -> int:
    import json

    return json.loads((run_dir / "final.json").read_text())["step"]


def _resolved_model(run_dir):
    from avsf.engine.evaluate import load_run_config

    return load_run_config(run_dir).model


def _params(run_dir) -> dict[str, torch.Tensor]:
    """Every weight and BN buffer of the run's last checkpoint."""
    from avsf.engine.checkpoint import load_latest

    return load_latest(os.path.join(run_dir, "checkpoints"))[0]["model"]


CASES = {
    "classify-laterals": {"model.droppathway_mode": "laterals"},
    "classify-pathway": {"model.droppathway_mode": "pathway"},
    # OGM-GE: scores summed over ranks, the same noise on each (issue 16)
    "classify-ogm_ge": {"model.balance": "ogm_ge", "model.ogm_alpha": 0.8},
    "classify-gblend": {"model.balance": "gblend", "model.gblend_weights": "[0.3, 0.1, 0.6]"},
    "pretrain-avs-rot": {"preset": "avslowfast_pretrain_tiny"},
    "detect-ava": {"preset": "avslowfast_tiny_ava", "data.limit_videos": 8},
}


@pytest.mark.parametrize("case", list(CASES))
def test_avslowfast_with_avs_and_droppathway_on_two_ranks_equals_accumulation_in_one(tmp_path, smoke_root, case):
    from avsf.engine.runtime import derive_seed

    overrides = CASES[case]
    smoke_parent = str(smoke_root.parent)
    cfg = _cfg(smoke_parent, overrides)
    ctx = mp.get_context("spawn")
    two = _run(ctx, 2, tmp_path / "ddp", smoke_parent, overrides)
    assert two[0][1] == two[1][1]
    _run(ctx, 1, tmp_path / "one", smoke_parent, {**overrides, "solver.accumulate": 2})
    steps = _steps(tmp_path / "one")
    assert steps == _steps(tmp_path / "ddp") and steps >= 2 * EPOCHS
    draws = [draw_droppathway(cfg.model, generator=torch.Generator().manual_seed(
        derive_seed(cfg.seed, "droppathway", step))) for step in range(steps)]
    assert any(draws) and not all(draws)  # steps where the draw drops and steps where it keeps
    ddp, one = _params(tmp_path / "ddp"), _params(tmp_path / "one")
    assert ddp.keys() == one.keys() and len(one) > 150
    worst = max(float((ddp[k].double() - one[k].double()).abs().max()) for k in one)
    assert worst <= 1e-5, worst
    # the steps moved the weights (the comparison is not between two untouched models)
    from avsf.models import build_model

    torch.manual_seed(derive_seed(cfg.seed, "model"))
    init = build_model(_resolved_model(tmp_path / "one")).state_dict()
    assert max(float((init[k].double() - one[k].double()).abs().max()) for k in one) > 1e-3
    # AVS trained at every stage: its projections moved too
    assert all(float((init[k] - one[k]).abs().max()) > 0 for k in one if k.startswith("avs."))


def test_offline_gblend_estimates_the_same_weights_on_two_ranks_as_accumulation_in_one(tmp_path, smoke_root):
    """The estimation pass under DDP: each window's training and the heads' losses (summed over
    ranks, scored with rank 0's BN statistics) equal one process's. Only the estimate is compared:
    G / dO^2 magnifies float-order differences (6e-6 of a weight here), and 8 steps of this tiny
    run turn that into 0.06 in a BN running variance, as two one-process runs given weights that
    far apart show. The run given the weights is compared above (classify-gblend)."""
    import json

    overrides = {"model.balance": "gblend", "model.gblend_window_epochs": 1}
    smoke_parent = str(smoke_root.parent)
    ctx = mp.get_context("spawn")
    _run(ctx, 2, tmp_path / "ddp", smoke_parent, overrides)
    _run(ctx, 1, tmp_path / "one", smoke_parent, {**overrides, "solver.accumulate": 2})
    ddp, one = (json.loads((tmp_path / r / "gblend.json").read_text()) for r in ("ddp", "one"))
    for when in ("start", "end"):
        for split in ("train", "val"):
            for head, value in one[when][split].items():
                assert abs(ddp[when][split][head] - value) <= 1e-6, (when, split, head)
    assert ddp["weights"] == pytest.approx(one["weights"], rel=1e-4, abs=1e-6)
    assert max(one["weights"].values()) < 1  # the estimate blends, it does not pick one head


def test_torchrun_train_equals_the_one_process_run_it_stands_for(tmp_path, smoke_root):
    """`torchrun --standalone --nproc_per_node 2 -m avsf train --preset avslowfast_tiny ...` as
    the README shows it: its final.json (test metrics over 2 ranks) and checkpoint equal those of
    `avsf train ... --set solver.accumulate=2` in one process (weights and BN statistics to 1e-5,
    the metrics exactly)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    sets = [f"data.synthetic_root={smoke_root.parent}", "data.limit_videos=32", "data.num_workers=0",
            "solver.epochs=2", "solver.batch_size=4", "solver.warmup_epochs=0", "eval_every=2", "tensorboard=false"]
    args = ["-m", "avsf", "train", "--preset", "avslowfast_tiny"] + [a for s in sets for a in ("--set", s)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = Path(sys.executable).with_name("torchrun")
    subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", *args, "--out", str(tmp_path / "tr")],
                   check=True, env=env, capture_output=True, timeout=300)
    subprocess.run([sys.executable, *args, "--set", "solver.accumulate=2", "--out", str(tmp_path / "one")],
                   check=True, env=env, capture_output=True, timeout=300)
    two, one = (json.loads((tmp_path / d / "final.json").read_text()) for d in ("tr", "one"))
    assert two["world_size"] == 2 and one["world_size"] == 1
    for key in ("top1", "top5", "per_class_accuracy", "confusion_matrix", "num_videos", "step", "epochs"):
        assert two[key] == one[key], key
    assert two["config_hash"] != one["config_hash"]  # solver.accumulate=2 is another run
    a, b = _params(tmp_path / "tr"), _params(tmp_path / "one")
    assert max(float((a[k].double() - b[k].double()).abs().max()) for k in a) <= 1e-5
