"""One notebook, end to end: collected runs -> tables, claims, plots, files.

:func:`build` reads the grid's runs from the sweep directory; :func:`build_from_runs` does
the rest from a runs table and a run-name -> directory mapping, so the same tables can be
rendered from any copy of the run directories.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from avsf.experiments import Experiment, GridEntry, load_claims
from avsf.report import plots as P
from avsf.report import stats as S
from avsf.report.collect import (ENSEMBLE_SEP, LATE_FUSION_DIR, collect, curves_of, grid_run_dirs,
                                 late_fusion_cache_name, metric_of, per_class_gains)
from avsf.report.params import Params
from avsf.report.tables import claims_table, parse_number, render, rows_table, summarize

NAMED_CLASSES = 5  # classes named in the per-class lists (the paper names four or five)
CURVES_FIGURE = "curves.png"  # every trained table's learning curves, beside its bars


@dataclass
class Result:
    """What a notebook shows: the tables, the figures and where they were written. ``markdown``
    is table.md without its figure links (relative to ``out_dir``): the notebook shows
    ``figures`` as embedded images instead."""

    runs: pd.DataFrame
    summary: pd.DataFrame
    rows: pd.DataFrame
    claims: pd.DataFrame
    figures: list[Path]
    markdown: str
    out_dir: Path


def build(params: Params, entries: list[GridEntry]) -> Result:
    """Collect the finished grid from ``params.sweep_dir`` and render it (:func:`build_from_runs`)."""
    exp = params.experiment
    if exp.name == "table1_architecture":
        from avsf.report.architecture import build_architecture  # noqa: PLC0415

        return build_architecture(params)
    runs = collect(exp, entries, params.sweep_dir)
    return build_from_runs(params, runs, grid_run_dirs(entries, params.sweep_dir),
                           ensemble_cache=Path(params.sweep_dir) / LATE_FUSION_DIR)


def build_from_runs(params: Params, runs: pd.DataFrame, run_dirs: Mapping[str, Path], *,
                    ensemble_cache: Path | None = None) -> Result:
    """Tables, claims and plots of ``runs`` (:func:`avsf.report.collect.read_runs`'s table);
    ``run_dirs`` maps each run name to its directory (curves, per-class results, ensembles);
    ``ensemble_cache``: the folder of the late-fusion metrics cache. The runs behind the table
    are archived beside it (:func:`avsf.report.archive.record_table`)."""
    exp = params.experiment
    out = Path(params.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = add_ensembles(exp, runs, run_dirs, seeds=params.seeds, scale=params.scale, cache_dir=ensemble_cache)
    summary = summarize(exp, runs, scale=params.scale)
    figures: list[Path] = []
    extra: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    if "bars" in exp.plots:
        for metric in exp.metrics:  # every metric the table reports gets its plot
            figures.append(out / f"bars_{metric}.png")
            P.close(P.plot_bars(exp, summary, metric=metric, path=figures[-1], runs=runs))
    if "ssl_bars" in exp.plots:  # transfer top-1 per dataset, pretext metrics
        figures.append(out / "bars_transfer_top1.png")
        P.close(P.plot_transfer_bars(exp, summary, path=figures[-1], runs=runs))
        figures.append(out / "bars_pretext.png")
        P.close(P.plot_pretext_bars(exp, summary, path=figures[-1]))
    curves = curves_of(runs, run_dirs)
    if "curves" not in exp.plots and len(curves):  # Fig. 3 draws its own (same drawing, with the gap)
        fig = P.plot_run_curves(exp, curves, path=out / CURVES_FIGURE)
        if fig is not None:
            P.close(fig)
            figures.append(out / CURVES_FIGURE)
    if "curves" in exp.plots:
        for metric in ("loss_task", "top1"):
            if len(curves[curves["metric"] == metric]):
                figures.append(out / f"curves_{metric}.png")
                P.close(P.plot_learning_curves(exp, curves, metric=metric, path=figures[-1]))
        extra.update(overfit_claims(exp, curves))
    if "per_class" in exp.plots:
        extra_pc, fig, note = per_class_claims(exp, runs, run_dirs, out)
        extra.update(extra_pc)
        figures += [fig] if fig else []
        notes += [note] if note else []
    claims = claims_table(exp, runs, scale=params.scale, extra=extra)
    if len(claims):
        forest = out / "forest.png"
        fig = P.plot_forest(exp, claims, path=forest)
        if fig is not None:
            P.close(fig)
            figures.insert(0, forest)  # the figure a reader looks at first
    rows = rows_table(exp, summary)
    markdown = render(params, runs=runs, rows=rows, claims=claims, figures=figures, notes=notes, run_dirs=run_dirs,
                      ensemble_cache=ensemble_cache)
    return Result(runs=runs, summary=summary, rows=rows, claims=claims, figures=figures, markdown=markdown,
                  out_dir=out)


def add_ensembles(exp: Experiment, runs: pd.DataFrame, run_dirs: Mapping[str, Path], *, seeds, scale: str,
                  cache_dir: Path | None) -> pd.DataFrame:
    """Evaluate each late-fusion row per seed (:mod:`avsf.engine.late_fusion`) on its members' runs."""
    extra = []
    for row in exp.rows_at(scale):
        if not row.is_ensemble:
            continue
        from avsf.engine.late_fusion import late_fusion_metrics  # noqa: PLC0415 (the engine is heavy)

        visual, audio = row.members
        for seed in seeds:
            def member(key):
                hit = runs[(runs["row"] == key) & (runs["seed"] == seed) & runs["finished"]]
                return hit.iloc[0]["run"] if len(hit) else None

            v_run, a_run = member(visual), member(audio)
            if v_run is None or a_run is None:
                continue
            cache = Path(cache_dir) / late_fusion_cache_name(v_run, a_run) if cache_dir is not None else None
            metrics = late_fusion_metrics(run_dirs[v_run], run_dirs[a_run], cache=cache)
            extra.append({"row": row.key, "seed": seed, "run": f"{v_run}{ENSEMBLE_SEP}{a_run}", "config_hash": "",
                          "finished": True, **{m: metric_of(metrics, m) for m in
                                               (*exp.metrics, "params", "gflops", "gflops_audio", "views")}})
    return pd.concat([runs, pd.DataFrame.from_records(extra)], ignore_index=True) if extra else runs


# --- claims read from curves and per-class results ----------------------------------------------
D1_RATIO, D1_FACTOR = 1 / 3, 2.0  # the paper: audio-only overfits at ~1/3 of the visual model's training


def overfit_claims(exp: Experiment, curves: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """D1: per seed, the epoch where the audio-only model's val top-1 peaks (it overfits after)
    as a fraction of the visual model's total training epochs (its last logged epoch)."""
    out = {}
    for link in exp.claims:
        if link.rule != "overfit_epoch":
            continue
        visual, audio = link.rows
        ratios, peaks, totals = [], [], []
        for seed in sorted(set(curves["seed"])) if len(curves) else []:
            peak = overfit_epoch(curves[curves["seed"] == seed], audio)
            v = curves[(curves["row"] == visual) & (curves["seed"] == seed)]
            if peak is None or not len(v):
                continue
            total = float(v["epoch"].max())
            peaks.append(peak)
            totals.append(total)
            ratios.append(peak / total)
        if not ratios:
            out[link.claim_id] = {"verdict": "not run at this scale"}
            continue
        ps = S.paired_stats(ratios)
        lo, hi = D1_RATIO / D1_FACTOR, D1_RATIO * D1_FACTOR
        if ps.n < S.MIN_SEEDS:
            verdict = S.seeds_note(ps.n)
        elif lo <= ps.ci_low and ps.ci_high <= hi:
            verdict = S.SUPPORTS
        elif ps.ci_high < lo or ps.ci_low > hi:
            verdict = S.CONTRADICTS
        else:
            verdict = S.INCONCLUSIVE
        out[link.claim_id] = {
            "ours_baseline": f"{np.mean(totals):g} training epochs", "ours_claimed": f"val peak at epoch {np.mean(peaks):g}",
            "ours_delta": f"{ps.mean:.2f} of visual", "ci_low": ps.ci_low, "ci_high": ps.ci_high, "seeds": ps.n,
            "verdict": verdict,
            "note": f"ratio per seed: audio-only val top-1 peak epoch / the visual model's training epochs; "
                    f"supports when its {S.CONFIDENCE:.0%} interval lies within a factor {D1_FACTOR:g} of 1/3 "
                    f"([{lo:.2f}, {hi:.2f}]), contradicts when it lies outside"}
    return out


def overfit_epoch(curves: pd.DataFrame, row: str, *, metric: str = "top1") -> float | None:
    """The epoch where a row's mean val metric peaks (after it, the model overfits)."""
    s = curves[(curves["row"] == row) & (curves["split"] == "val") & (curves["metric"] == metric)]
    if not len(s):
        return None
    mean = s.groupby("epoch")["value"].mean()
    return float(mean.idxmax())


def split_gains(gains: pd.Series, *, count: int = NAMED_CLASSES) -> tuple[pd.Series, pd.Series]:
    """The largest gains (> 0, largest first) and the largest losses (< 0, largest first)."""
    return gains[gains > 0].head(count), gains[gains < 0].sort_values().head(count)


def _named(series: pd.Series, *, ratio: bool = False) -> str:
    if not len(series):
        return "none"
    return "; ".join(f"{k} {v:.2f}x" if ratio else f"{k} {v:+.1f}" for k, v in series.items())


def per_class_claims(exp: Experiment, runs: pd.DataFrame, run_dirs: Mapping[str, Path], out: Path):
    """Per-class gains of the claimed row over the baseline; the per-class claims name the
    paper's classes with an absolute gain (``swim +30.2``) or a ratio (``throw 2.0x``)."""
    link = next(c for c in exp.claims if c.rule == "per_class")
    base_key, new_key = link.rows

    def dirs(key):
        return [run_dirs[r] for r in runs[(runs["row"] == key) & runs["finished"]]["run"] if r in run_dirs]

    gains = per_class_gains(dirs(base_key), dirs(new_key))
    if not len(gains):
        return {c.claim_id: {"verdict": "not run at this scale"} for c in exp.claims if c.rule == "per_class"}, None, None
    ap = link.metric == "map"
    fig_path = out / ("figA1_per_class_ap.png" if ap else "per_class_gain.png")
    P.close(P.plot_per_class_gain(gains, path=fig_path, title=f"{exp.artifact}: AVSlowFast minus SlowFast, per class",
                                  xlabel="AP gain (percentage points)" if ap else "top-1 gain (percentage points)"))
    top, bottom = split_gains(gains)
    ratios = per_class_gains(dirs(base_key), dirs(new_key), relative=True)
    claims = {c["id"]: c for c in load_claims()}
    extra = {}
    for c in exp.claims:
        if c.rule != "per_class":
            continue
        named = [part.strip().rsplit(" ", 1) for part in claims[c.claim_id]["claimed_delta"].split(";")]
        relative = all(value.strip().lower().endswith("x") for _, value in named)
        series, pivot = (ratios, 1.0) if relative else (gains, 0.0)
        present = [(name, value) for name, value in named if name in series.index]
        if not present:
            verdict = "not comparable: the paper's classes are not in this dataset"
        else:
            agree = sum((series[name] > pivot) == ((parse_number(value) or 0) > pivot) for name, value in present)
            verdict = f"{agree}/{len(present)} named classes move the claimed way"
        gains_claimed = all((parse_number(value) or 0) > pivot for _, value in named)
        if relative:
            shown = ratios[ratios > 1].head(NAMED_CLASSES) if gains_claimed else \
                ratios[ratios < 1].sort_values().head(NAMED_CLASSES)
            ours = _named(shown, ratio=True)
        else:
            ours = _named(top if gains_claimed else bottom)
        seeds = int(min(len(dirs(base_key)), len(dirs(new_key))))
        extra[c.claim_id] = {"ours_delta": ours, "seeds": seeds, "verdict": verdict}
    note = f"Largest gains: {_named(top)}. Largest losses: {_named(bottom)}."
    if ap and len(ratios):
        note += " Largest relative gains: " + _named(ratios[ratios > 1].head(3), ratio=True) + "."
    return extra, fig_path, note

