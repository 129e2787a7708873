"""`avsf bench recipe`: does the smoke recipe meet the criteria it was chosen by?

The criteria (docs/SMOKE_RECIPE.md, fixed before the recipe's runs) are checked here on the
tiny presets exactly as they are, trained on the default smoke data:

- fit: ``avslowfast_tiny`` final-epoch train top-1 >= 90 and test top-1 >= 60 (mean over
  seeds); ``slowfast_tiny`` test top-1 >= 45;
- complementarity: AVSlowFast's mean test top-1 beats each single modality's by >= 5 points;
- the paper's premise (Fig. 3), per seed: the audio-only model's train - val gap at its last
  epoch exceeds the visual model's, and its val top-1 peaks before its last epoch;
- the loop computes: waiting for data is <= 10 % of the training loop's time.

Linear probes on the data's fixed features (``avsf.data.synthetic.probes``) are reported beside
the trained models: what the data offers a linear read-out.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any, Iterable

AV, VISUAL, AUDIO = "avslowfast_tiny", "slowfast_tiny", "audio_only_tiny"
PRESETS = (AV, VISUAL, AUDIO)
AV_TRAIN_MIN, AV_TEST_MIN, VISUAL_TEST_MIN, AV_MARGIN_MIN = 90.0, 60.0, 45.0, 5.0
DATA_WAIT_MAX = 0.10
# runs trained at once: on 2 cores each tiny run computes on one (avsf.engine.runtime.cpu_threads
# gives it one thread beside its 2 loader workers), so two at a time use both
DEFAULT_PARALLEL = 2


def read_epochs(run_dir: str | Path) -> list[dict[str, Any]]:
    """The per-epoch lines of a run's metrics.jsonl, in order."""
    lines = [json.loads(s) for s in (Path(run_dir) / "metrics.jsonl").read_text().splitlines() if s.strip()]
    return [line for line in lines if line.get("kind") == "epoch"]


def last_gap(epochs: list[dict[str, Any]]) -> float:
    """Train - val top-1 at the last epoch that was validated."""
    last = [e for e in epochs if "val_top1" in e][-1]
    return float(last["train_top1"] - last["val_top1"])


def val_peak_epoch(epochs: list[dict[str, Any]]) -> int:
    """The (first) epoch of the highest val top-1."""
    validated = [e for e in epochs if "val_top1" in e]
    best = max(e["val_top1"] for e in validated)
    return int(next(e["epoch"] for e in validated if e["val_top1"] == best))


def premise(visual_epochs: list[dict[str, Any]], audio_epochs: list[dict[str, Any]]) -> dict[str, Any]:
    """Fig. 3's premise on one seed's curves: audio overfits more, and earlier, than vision."""
    gap_a, gap_v = last_gap(audio_epochs), last_gap(visual_epochs)
    peak, last = val_peak_epoch(audio_epochs), int(audio_epochs[-1]["epoch"])
    return {"audio_gap": gap_a, "visual_gap": gap_v, "audio_val_peak_epoch": peak, "audio_last_epoch": last,
            "gap_holds": gap_a > gap_v, "peak_holds": peak < last, "holds": gap_a > gap_v and peak < last}


def preset_config(preset: str, *, seed: int, synthetic_root: str | None = None):
    """One tiny preset as it is, at `seed` (on the built-in data at `synthetic_root`)."""
    from avsf.presets import get_preset

    overrides: dict[str, Any] = {"seed": seed}
    if synthetic_root:
        overrides["data.synthetic_root"] = str(synthetic_root)
    return get_preset(preset).with_overrides(overrides)


def train_presets(jobs: Iterable[tuple[str, int]], *, out: str | Path, synthetic_root: str | None = None,
                  max_parallel: int = DEFAULT_PARALLEL) -> dict[tuple[str, int], Path]:
    """Train (or reuse) each (preset, seed) as it is, `max_parallel` at a time through the local
    launcher (processes on this machine, as `avsf sweep --backend local` runs them); returns
    their run dirs. A run that fails raises with its reason."""
    from avsf import launch
    from avsf.errors import UserError

    configs = {job: preset_config(job[0], seed=job[1], synthetic_root=synthetic_root) for job in jobs}
    launch.submit(list(configs.values()), backend="local", sweep_dir=out, max_parallel=max_parallel, verbose=False)
    frame = launch.wait(out, runs=[launch.run_name(c) for c in configs.values()], timeout_s=None, poll_s=5.0)
    failed = frame[frame["state"] != "done"]
    if len(failed):
        raise UserError("recipe runs did not finish: " + "; ".join(f"{r.run}: {r.state} ({r.reason or r.error})"
                                                                   for r in failed.itertuples()))
    return {job: launch.run_dir_for(c, out) for job, c in configs.items()}


def summarize(run_dirs: dict[tuple[str, int], Path], *, premise_seeds: tuple[int, ...] = (0, 1)) -> dict[str, Any]:
    """The criteria on finished runs keyed by (preset, seed)."""
    runs: list[dict[str, Any]] = []
    for (preset, seed), run_dir in sorted(run_dirs.items()):
        epochs = read_epochs(run_dir)
        final = json.loads((Path(run_dir) / "final.json").read_text())
        wait, compute = sum(e.get("data_wait_s", 0.0) for e in epochs), sum(e.get("compute_s", 0.0) for e in epochs)
        runs.append({"preset": preset, "seed": seed, "train_top1": epochs[-1]["train_top1"],
                     "val_top1": epochs[-1].get("val_top1"), "test_top1": final["top1"],
                     "data_wait_frac": wait / max(wait + compute, 1e-9), "wall_s": epochs[-1]["wall_time_s"] + final.get("test_wall_time_s", 0)})
    mean = {p: {k: statistics.mean(r[k] for r in runs if r["preset"] == p) for k in ("train_top1", "test_top1")}
            for p in PRESETS if any(r["preset"] == p for r in runs)}
    checks: dict[str, dict[str, Any]] = {}
    if AV in mean:
        checks["av_train_top1"] = {"value": mean[AV]["train_top1"], "min": AV_TRAIN_MIN}
        checks["av_test_top1"] = {"value": mean[AV]["test_top1"], "min": AV_TEST_MIN}
        for other in (VISUAL, AUDIO):
            if other in mean:
                checks[f"av_minus_{other}"] = {"value": mean[AV]["test_top1"] - mean[other]["test_top1"],
                                               "min": AV_MARGIN_MIN}
    if VISUAL in mean:
        checks["visual_test_top1"] = {"value": mean[VISUAL]["test_top1"], "min": VISUAL_TEST_MIN}
    checks["data_wait_frac"] = {"value": max(r["data_wait_frac"] for r in runs), "max": DATA_WAIT_MAX}
    for c in checks.values():
        c["ok"] = c["value"] >= c["min"] if "min" in c else c["value"] <= c["max"]
    premises = {seed: premise(read_epochs(run_dirs[(VISUAL, seed)]), read_epochs(run_dirs[(AUDIO, seed)]))
                for seed in premise_seeds if (VISUAL, seed) in run_dirs and (AUDIO, seed) in run_dirs}
    return {"runs": runs, "mean": mean, "checks": checks, "premise": premises,
            "all_ok": all(c["ok"] for c in checks.values()) and all(p["holds"] for p in premises.values())}


def bench_recipe(*, out: str | Path, seeds: tuple[int, ...] = (0, 1, 2), presets: tuple[str, ...] = PRESETS,
                 synthetic_root: str | None = None, probes: bool = True,
                 max_parallel: int = DEFAULT_PARALLEL) -> dict[str, Any]:
    """Train every preset x seed in `out` (finished runs are reused), then :func:`summarize`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    run_dirs = train_presets([(p, s) for s in seeds for p in presets], out=out, synthetic_root=synthetic_root,
                             max_parallel=max_parallel)
    result = summarize(run_dirs, premise_seeds=tuple(s for s in (0, 1) if s in seeds))
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    if probes:
        from avsf.data.synthetic.probes import probe_dataset
        from avsf.data.synthetic import ensure_synthetic
        from avsf.presets import get_preset

        data = get_preset(AV).data
        root = ensure_synthetic(synthetic_root or data.synthetic_root, data.synthetic_scale, data.synthetic_seed)
        result["probes"] = {k: {"train_top1": 100 * v["train_top1"], "test_top1": 100 * v["test_top1"]}
                            for k, v in probe_dataset(root).items()}
    return result


def format_report(result: dict[str, Any]) -> str:
    lines = ["recipe check: the tiny presets as they are, on the default smoke data", "",
             f"{'preset':<18}{'seed':>5}{'train':>8}{'val':>8}{'test':>8}{'wait':>7}{'wall s':>8}"]
    for r in result["runs"]:
        val = "-" if r["val_top1"] is None else f"{r['val_top1']:.1f}"
        lines.append(f"{r['preset']:<18}{r['seed']:>5}{r['train_top1']:>8.1f}{val:>8}{r['test_top1']:>8.1f}"
                     f"{r['data_wait_frac']:>7.3f}{r['wall_s']:>8.0f}")
    if "probes" in result:
        lines += ["", "linear probes on fixed features (train / test top-1):"]
        lines += [f"  {k:<8}{v['train_top1']:6.1f} / {v['test_top1']:.1f}" for k, v in result["probes"].items()]
    lines += ["", "criteria:"]
    for name, c in result["checks"].items():
        bound = f">= {c['min']}" if "min" in c else f"<= {c['max']}"
        lines.append(f"  {name:<34}{c['value']:8.2f}  {bound:<8} {'ok' if c['ok'] else 'NOT MET'}")
    for seed, p in result["premise"].items():
        lines.append(f"  premise seed {seed}: audio gap {p['audio_gap']:.1f} vs visual {p['visual_gap']:.1f} "
                     f"({'ok' if p['gap_holds'] else 'NOT MET'}); audio val peak at epoch "
                     f"{p['audio_val_peak_epoch']} of {p['audio_last_epoch']} ({'ok' if p['peak_holds'] else 'NOT MET'})")
    lines.append(f"\nall criteria met: {result['all_ok']}")
    return "\n".join(lines)
