"""Four short end-to-end runs, one per engine task, whose files pin the engine's behaviour:
a classifier (avslowfast_tiny on the HMDB51 view), a detector (avslowfast_tiny_ava), a
pretraining run (avslowfast_pretrain_tiny, AVS + ROT) and a linear probe initialised from it.

``python tests/task_runs.py --record`` writes their final.json and metrics.jsonl, machine
fields removed (:func:`comparable`), to ``tests/reference/tasks.json``; tests/test_tasks.py reruns
them and compares. Record again only when a change of results is intended, and say so.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path
from typing import Any

REFERENCE = Path(__file__).resolve().parent / "reference" / "tasks.json"
# fields of final.json that depend on the machine or the clock, not on the computation
FINAL_TIMING = ("train_wall_time_s", "test_wall_time_s")
THREADS = 1  # intra-op threads of every reference run: thread counts may change float sums


def _configs(data_dir: Path) -> dict[str, Any]:
    """name -> (preset, overrides): one epoch each, few steps, one test view."""
    from avsf.data.synthetic.views import ensure_synthetic_view

    hmdb = ensure_synthetic_view(kind="hmdb51", synthetic_root=data_dir, scale="smoke")
    pt_root = ensure_synthetic_view(kind="ssl_pretrain", synthetic_root=data_dir, scale="smoke")
    common = {"data.synthetic_root": str(data_dir), "data.num_workers": 0, "solver.epochs": 1}
    return {
        # DropPathway and AVS on, val + 2-view test
        "classify": ("avslowfast_tiny", {**common, "data.dataset": "hmdb51", "data.root": str(hmdb),
                                         "solver.batch_size": 8, "eval_every": 1}),
        "detect": ("avslowfast_tiny_ava", {**common, "solver.batch_size": 16}),
        "pretrain": ("avslowfast_pretrain_tiny", {**common, "data.dataset": "kinetics", "data.root": str(pt_root),
                                                  "solver.batch_size": 16}),
        # the linear probe of Table 8 / A.1: frozen backbone from the pretrain run's checkpoint
        "probe": ("avslowfast_tiny", {**common, "data.dataset": "hmdb51", "data.root": str(hmdb),
                                      "model.avs_stages": "[]", "model.init_from": "pretrain",
                                      "model.freeze": "backbone", "solver.batch_size": 8}),
    }


def four_class_split(src: Path, out: Path) -> Path:
    """Split files for 4 classes of the built-in dataset in `src`: 8 training, 4 val, 4 test videos."""
    out.mkdir(parents=True, exist_ok=True)
    names = json.loads((src / "classnames.json").read_text())
    (out / "classnames.json").write_text(json.dumps({k: v for k, v in names.items() if v < 4}))
    for split, per_class in (("train", 2), ("val", 1), ("test", 1)):
        taken: dict[int, int] = {}
        lines = []
        for line in (src / f"{split}.csv").read_text().splitlines():
            label = int(line.split()[-1]) if line.strip() else 99
            if label < 4 and taken.get(label, 0) < per_class:
                lines.append(line)
                taken[label] = taken.get(label, 0) + 1
        (out / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return out


def _machine_free(final: dict[str, Any], sweep_dir: Path) -> dict[str, Any]:
    # the environment fingerprint describes the machine (CPU flags, versions), not the computation
    final = {k: v for k, v in final.items() if k not in FINAL_TIMING and k != "environment"}
    if isinstance(final.get("init_from"), dict):
        src = final["init_from"] = dict(final["init_from"])
        src["path"] = Path(src["path"]).relative_to(sweep_dir).as_posix()
    return final


def comparable(run_dir: Path) -> dict[str, Any]:
    """{"final": final.json, "metrics": metrics.jsonl lines} without timing fields; machine paths
    in ``init_from`` reduced to the path below the sweep dir."""
    from avsf.engine.train import TIMING_FIELDS

    final = _machine_free(json.loads((run_dir / "final.json").read_text()), run_dir.parent)
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {"final": final, "metrics": [{k: v for k, v in x.items() if k not in TIMING_FIELDS} for x in lines]}


def run_all(sweep_dir: Path, data_dir: Path, *, names: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Train the reference runs in ``sweep_dir/<name>`` (``probe`` needs ``pretrain``) with
    THREADS threads, then test each again with the evaluator; returns {name: :func:`comparable`
    + "evaluated": evaluate's final.json}."""
    import torch

    from avsf.engine.evaluate import evaluate
    from avsf.engine.train import train
    from avsf.presets import get_preset

    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        out = {}
        for name, (preset, overrides) in _configs(data_dir).items():
            if names is not None and name not in names:
                continue
            run_dir = sweep_dir / name
            train(get_preset(preset).with_overrides(overrides), run_dir)
            out[name] = comparable(run_dir)
            # `avsf test`: the evaluator's pass over the newest checkpoint (it rewrites final.json)
            out[name]["evaluated"] = _machine_free(evaluate(run_dir), sweep_dir)
        return out
    finally:
        torch.set_num_threads(threads)


def environment() -> dict[str, str]:
    """What the numbers depend on besides the code: the same code on another CPU or torch may
    round differently. The model name alone does not say it: "AMD EPYC" names chips with and
    without AVX-512, whose vector kernels sum in other orders, hence ATen's dispatch level beside
    it. Rounding is not always small here: detect's per-class AP over a few clips moved 16.7 ->
    15.2 when 70bdfe4 only changed the memory layout of a BN."""
    from avsf.fingerprint import environment_fingerprint

    fp = environment_fingerprint()  # what every final.json records; the key keeps the fields that pick kernels
    return {"torch": fp["torch"], "machine": platform.machine(), "cpu": fp["cpu"],
            "cpu_capability": fp["cpu_capability"]}


if __name__ == "__main__":
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from conftest import test_data_dir

    if sys.argv[1:] != ["--record"]:
        sys.exit("usage: python tests/task_runs.py --record")
    with tempfile.TemporaryDirectory() as tmp:
        runs = run_all(Path(tmp), test_data_dir())
    REFERENCE.parent.mkdir(exist_ok=True)
    REFERENCE.write_text(json.dumps({"environment": environment(), "runs": runs}, indent=1, sort_keys=True) + "\n")
    print(f"wrote {REFERENCE}")
