"""Acceptance on the built-in dataset: `avslowfast_tiny` beats both `slowfast_tiny` and
`audio_only_tiny` on test top-1, mean over 3 seeds, with the presets exactly as they are.

Validation passes are switched off here (eval_every=0): they do not change training (every
step reseeds the RNGs it uses), so the test metrics are those of the presets as they are,
at less cost.

Each run is timed: the issue asks for under 3 minutes on 2 cores. Wall time depends on what
else the machine runs, so the assertion is on CPU time (this process and its loader workers):
under 2 cores x 180 s; the wall times are printed beside it."""

import json
import resource
import statistics
import time
from pathlib import Path

import pytest

from avsf.config import get_preset
from avsf.engine.train import train

REPO = Path(__file__).resolve().parents[1]
PRESETS = ("avslowfast_tiny", "slowfast_tiny", "audio_only_tiny")
SEEDS = (0, 1, 2)


def _cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


@pytest.mark.slow
def test_avslowfast_beats_visual_only_and_audio_only(tmp_path):
    top1: dict[str, list[float]] = {p: [] for p in PRESETS}
    rows = []
    for seed in SEEDS:
        for preset in PRESETS:
            cfg = get_preset(preset).with_overrides(
                {"seed": seed, "eval_every": 0, "data.synthetic_root": str(REPO / "data" / "synthetic")})
            t0, c0 = time.perf_counter(), _cpu_seconds()
            final = train(cfg, tmp_path / f"{preset}-{seed}")
            wall, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
            rows.append({"preset": preset, "seed": seed, "top1": final["top1"], "top5": final["top5"],
                         "wall_s": round(wall, 1), "cpu_s": round(cpu, 1)})
            top1[preset].append(final["top1"])
            assert cpu < 2 * 180, f"{preset} seed {seed} used {cpu:.0f} CPU-s (over 3 minutes on 2 cores)"
    means = {p: statistics.mean(v) for p, v in top1.items()}
    print(json.dumps({"runs": rows, "mean_top1": means}, indent=1))
    assert means["avslowfast_tiny"] > means["slowfast_tiny"], means
    assert means["avslowfast_tiny"] > means["audio_only_tiny"], means
