"""Figures as the field draws them: bars from 0 with 95 % intervals and a chance line, the
paper's numbers marked, a forest plot of every claim's paired difference, learning curves
(one drawing, :func:`draw_curves`: Fig. 3's with the train-val gap, every trained table's
beside its bars), per-class gains. Each function saves a PNG and returns
the figure; :func:`close` frees it (the notebook shows the PNG file)."""

from __future__ import annotations

import io
import sys
import textwrap
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from avsf.engine.io import atomic_write
from avsf.experiments import Experiment, get_experiment, load_claims
from avsf.report import stats as S
from avsf.report.tables import parse_number

DEFAULT_COLOR, OTHER_COLOR = "#1f4e79", "#8fb3d9"
LABEL_WIDTH, TITLE_WIDTH = 16, 70  # characters per line of wrapped row labels and titles
INTERVAL_CAPTION = f"error bars: {S.CONFIDENCE:.0%} t-interval of the mean over seeds (none with one seed)"
METRIC_LABELS = {"top1": "top-1 (%)", "top5": "top-5 (%)", "map": "mAP (%)", "verb_top1": "verb top-1 (%)",
                 "noun_top1": "noun top-1 (%)", "action_top1": "action top-1 (%)", "rot_top1": "rotation top-1 (%)",
                 "loss_avs": "AVS loss (val)"}


def _pyplot():
    import matplotlib  # noqa: PLC0415

    if "matplotlib.pyplot" not in sys.modules and "ipykernel" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def close(fig) -> None:
    """Free a saved figure."""
    _pyplot().close(fig)


def wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(str(text), width)) or str(text)


def _save(fig, path: Path, caption: str | None = None, *, rect: tuple[float, float, float, float] | None = None):
    """Lay out ``fig`` in ``rect`` (default: all of it, above the caption), write it to ``path``."""
    if caption:
        fig.text(0.01, 0.005, wrap(caption, 110), fontsize=7, va="bottom", ha="left", color="0.3")
    fig.tight_layout(rect=rect or (0, 0.06 if caption else 0, 1, 1))
    buffer = io.BytesIO()  # rendered first: a full disk then leaves the old figure and names the file
    fig.savefig(buffer, dpi=110, format=Path(path).suffix.lstrip(".") or "png")
    atomic_write(path, buffer.getbuffer())
    return fig


def chance_level(metric: str, runs: pd.DataFrame, rows: list[str]) -> float | None:
    """Chance of a metric for a model that guesses uniformly, from the runs' class counts
    (config.json); None where it depends on label frequencies (mAP) or has no chance level."""
    done = runs[runs["row"].isin(rows)] if len(runs) and "row" in runs else runs

    def count(col):
        vals = pd.to_numeric(done[col], errors="coerce").dropna() if col in done else pd.Series(dtype=float)
        vals = vals[vals > 0]
        return float(vals.iloc[0]) if len(vals) and vals.nunique() == 1 else None

    k, verbs, nouns = count("num_classes"), count("num_verbs"), count("num_nouns")
    if metric == "rot_top1":
        return 25.0  # four rotations
    if metric in ("top1", "top5") and k:
        return 100.0 * min(5 if metric == "top5" else 1, k) / k
    if metric == "verb_top1" and verbs:
        return 100.0 / verbs
    if metric == "noun_top1" and nouns:
        return 100.0 / nouns
    if metric == "action_top1" and verbs and nouns:
        return 100.0 / (verbs * nouns)
    return None


def _paper_values(exp: Experiment, metric: str) -> dict[str, float]:
    """row key -> the paper's number for it, from the claims that name one (baseline_value,
    claimed_value) for this metric."""
    claims = {c["id"]: c for c in load_claims()}
    out: dict[str, float] = {}
    for link in exp.claims:
        if link.metric != metric or len(link.rows) != 2 or link.rule not in ("delta", "sign", "equivalence", "per_class"):
            continue
        c = claims[link.claim_id]
        # a direction-only comparison's claimed value is another row's (A4 at P_d = 0.5 vs 0.8's 77.0)
        values = (c["baseline_value"],) if link.rule == "sign" else (c["baseline_value"], c["claimed_value"])
        for row, value in zip(link.rows, values):
            number = parse_number(value)
            if number is not None:
                out.setdefault(row, number)
    return out


def plot_bars(exp: Experiment | str, summary: pd.DataFrame, *, metric: str, path: Path,
              runs: pd.DataFrame | None = None):
    """Bars of one metric per row from 0, error bars = 95 % t-interval of the mean over seeds;
    the default row dark; a dashed chance line; the paper's value of a row as a diamond."""
    exp = get_experiment(exp) if isinstance(exp, str) else exp
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4.5, 1.2 * len(summary) + 1.5), 3.8))
    means = summary[f"{metric}_mean"].to_numpy(dtype=float)
    half = summary[f"{metric}_ci"].to_numpy(dtype=float)
    x = np.arange(len(summary))
    colors = [DEFAULT_COLOR if d else OTHER_COLOR for d in summary["default"]]
    ax.bar(x, np.nan_to_num(means), color=colors)
    ok = ~np.isnan(half)
    ax.errorbar(x[ok], means[ok], yerr=half[ok], fmt="none", ecolor="k", capsize=4, lw=1)
    ax.set_xticks(x)
    ax.set_xticklabels([wrap(label, LABEL_WIDTH) for label in summary["label"]], fontsize=7)
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    chance = chance_level(metric, runs if runs is not None else pd.DataFrame(), list(summary["row"]))
    if chance is not None:
        ax.axhline(chance, color="0.4", ls="--", lw=1, label=f"chance {chance:.3g}")
    paper = _paper_values(exp, metric)
    if paper:
        px = [i for i, r in enumerate(summary["row"]) if r in paper]
        ax.scatter(px, [paper[summary["row"].iloc[i]] for i in px], marker="D", facecolor="none",
                   edgecolor="#b03a2e", zorder=3, label="paper's value")
    if chance is not None or paper:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_ylim(bottom=0)  # after everything is drawn: setting a limit stops autoscaling
    ax.set_title(wrap(f"{exp.artifact}: {exp.title}", TITLE_WIDTH), fontsize=9)
    seeds = sorted(set(int(n) for n in summary[f"{metric}_n"]))
    return _save(fig, path, f"{INTERVAL_CAPTION}; seeds per row: {', '.join(map(str, seeds))}.")


def plot_forest(exp: Experiment | str, claims: pd.DataFrame, *, path: Path):
    """One line per claim: our paired difference (mean, 95 % t-interval), the paper's delta
    (red x) and zero; equivalence margins shaded. None when no claim has an interval."""
    exp = get_experiment(exp) if isinstance(exp, str) else exp
    shown = claims[pd.to_numeric(claims["ci_low"], errors="coerce").notna()] if len(claims) else claims
    if not len(shown):
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 1.2 + 0.55 * len(shown)))
    margins = {link.claim_id: link.margin for link in exp.claims if link.margin}
    for i, (_, c) in enumerate(shown.iterrows()):
        mean = float(str(c["ours_delta"]).split()[0]) if c["ours_delta"] not in ("-", "") else float("nan")
        lo, hi = float(c["ci_low"]), float(c["ci_high"])
        if "then" in str(c["ours_delta"]):  # up-then-down: the interval is the weaker step's
            mean = (lo + hi) / 2
        ax.plot([lo, hi], [i, i], color=DEFAULT_COLOR, lw=2)
        ax.plot([mean], [i], "o", color=DEFAULT_COLOR)
        paper = parse_number(c["paper_delta"]) if str(c["paper_delta"]).strip()[:1] in "+-~" else None
        if paper is not None:
            ax.plot([paper], [i], "x", color="#b03a2e", ms=8, mew=2)
        if c["claim"] in margins:
            m = margins[c["claim"]]
            ax.fill_betweenx([i - 0.3, i + 0.3], -m, m, color="#2a7d2e", alpha=0.15)
        ax.text(1.01, i, wrap(str(c["verdict"]), 28), transform=ax.get_yaxis_transform(), fontsize=7, va="center")
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(range(len(shown)))
    ax.set_yticklabels([wrap(f"{c['claim']} {c['comparison']}", 26) for _, c in shown.iterrows()], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("paired difference, claimed row minus baseline (points)")
    ax.set_title(wrap(f"{exp.artifact}: every claim's difference (verdicts at right)", TITLE_WIDTH), fontsize=9)
    return _save(fig, path, f"dot and line: our mean paired difference and its {S.CONFIDENCE:.0%} t-interval over "
                            "seeds (unadjusted); red x: the paper's delta; green band: equivalence margin.")


CURVE_CAPTION = f"mean over seeds; band: {S.CONFIDENCE:.0%} t-interval of the mean (none with one seed)"
# the accuracy a curve figure shows: the table's metric where the trainer logs it per epoch, else these
CURVE_ACCURACY = ("top1", "map", "rot_top1")
CURVE_LOSSES = ("loss_task", "loss")  # the task loss (rows with and without audio compare), else the total
CURVE_STYLES = {"train": ("--", "white"), "val": ("-", None)}  # split -> line style, marker face (None: filled)


def _metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, "task loss" if metric == "loss_task" else metric)


def row_colors(curves: pd.DataFrame) -> dict[str, Any]:
    """One colour per row of ``curves``, in order of appearance: the same in every panel
    (matplotlib's ten, or tab20's twenty when there are more rows: Table 8 has 19)."""
    rows = list(dict.fromkeys(curves["row"]))
    if len(rows) <= 10:
        return {row: f"C{i}" for i, row in enumerate(rows)}
    import matplotlib  # noqa: PLC0415

    palette = matplotlib.colormaps["tab20"].colors
    return {row: palette[i % len(palette)] for i, row in enumerate(rows)}


def draw_curves(ax, curves: pd.DataFrame, *, metric: str, labels: Mapping[str, str],
                colors: Mapping[str, str] | None = None) -> dict[str, dict[str, pd.Series]]:
    """Draw one metric of ``curves`` (:func:`avsf.report.collect.curves_of`'s long table) on
    ``ax``: per row (its colour from ``colors``, default :func:`row_colors`) the train
    (dashed) and val (solid) mean over seeds per epoch, with the 95 % t-interval of that mean
    as a band. Returns row -> split -> the mean per epoch (what a gap panel subtracts)."""
    part = curves[curves["metric"] == metric]
    colors = row_colors(curves) if colors is None else colors
    means: dict[str, dict[str, pd.Series]] = {}
    for row in dict.fromkeys(part["row"]):
        color = colors[row]
        for split, (style, face) in CURVE_STYLES.items():
            s = part[(part["row"] == row) & (part["split"] == split)]
            if not len(s):
                continue
            g = s.groupby("epoch")["value"]
            mean = g.mean()
            half = g.agg(S.mean_ci_half).fillna(0.0)
            labelled = split == "val" or "val" not in set(part.loc[part["row"] == row, "split"])
            means.setdefault(row, {})[split] = mean
            ax.plot(mean.index, mean.values, style, marker="o", ms=3 if len(mean) > 1 else 5, color=color,
                    markerfacecolor=face or color, label=wrap(labels.get(row, row), 30) if labelled else None)
            ax.fill_between(mean.index, mean - half, mean + half, color=color, alpha=0.15, lw=0)
    ax.set_xlabel("epoch")
    ax.set_ylabel(_metric_label(metric))
    epochs = sorted(set(part["epoch"]))
    if 0 < len(epochs) <= 12:  # whole epochs: a tick on each (a locator puts 0.975 beside a lone epoch)
        ax.set_xticks(epochs)
    else:
        from matplotlib.ticker import MaxNLocator  # noqa: PLC0415 (after _pyplot chose the backend)

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return means


def split_key() -> list:
    """Legend entries for the line styles :func:`draw_curves` gives the splits."""
    from matplotlib.lines import Line2D  # noqa: PLC0415

    return [Line2D([], [], ls=style, marker="o", ms=4, color="0.3", markerfacecolor=face or "0.3", label=split)
            for split, (style, face) in CURVE_STYLES.items()]


def plot_learning_curves(exp: Experiment | str, curves: pd.DataFrame, *, metric: str, path: Path):
    """Left: train (dashed) and val (solid) curves of each row (:func:`draw_curves`). Right:
    the gap per epoch (val minus train for a loss, train minus val for an accuracy: positive
    means the model fits its training clips better than held-out ones)."""
    exp = get_experiment(exp) if isinstance(exp, str) else exp
    plt = _pyplot()
    fig, (ax, gap_ax) = plt.subplots(1, 2, figsize=(10.0, 3.8))
    labels = {r.key: r.label for r in exp.rows}
    colors = row_colors(curves[curves["metric"] == metric])
    means = draw_curves(ax, curves, metric=metric, labels=labels, colors=colors)
    for row, by_split in means.items():
        if len(by_split) == 2:
            gap = (by_split["val"] - by_split["train"]) if metric.startswith("loss") else \
                (by_split["train"] - by_split["val"])
            gap = gap.dropna()
            gap_ax.plot(gap.index, gap.values, "-o", ms=3, color=colors[row], label=wrap(labels.get(row, row), 30))
    ax.legend(handles=ax.get_legend_handles_labels()[0] + split_key(), fontsize=6)
    gap_ax.axhline(0, color="k", lw=0.8)
    gap_ax.set_xlabel("epoch")
    gap_ax.set_ylabel("val - train" if metric.startswith("loss") else "train - val")
    gap_ax.set_title("generalisation gap", fontsize=8)
    if gap_ax.lines[1:]:
        gap_ax.legend(fontsize=6)
    fig.suptitle(wrap(f"{exp.artifact}: {exp.title} ({metric})", TITLE_WIDTH), fontsize=9)
    caption = ("task loss only (classification loss, no AVS term), so rows with and without audio compare; "
               if metric == "loss_task" else "") + CURVE_CAPTION + "."
    return _save(fig, path, caption)


def curve_metrics(exp: Experiment, curves: pd.DataFrame) -> list[str]:
    """The accuracy and the loss a run-curves figure shows: the first of the table's metrics
    and :data:`CURVE_ACCURACY` that the runs logged per epoch, and the first of
    :data:`CURVE_LOSSES` (none where nothing was logged)."""
    logged = set(curves["metric"]) if len(curves) else set()
    accuracy = next((m for m in (*exp.metrics, *CURVE_ACCURACY) if m in logged), None)
    loss = next((m for m in CURVE_LOSSES if m in logged), None)
    return [m for m in (accuracy, loss) if m]


def plot_run_curves(exp: Experiment | str, curves: pd.DataFrame, *, path: Path):
    """The learning curves of a table's runs beside its bars: one panel per metric of
    :func:`curve_metrics` (accuracy, then task loss), train dashed and val solid per row,
    mean and 95 % interval over seeds (:func:`draw_curves`, the drawing Fig. 3 uses).
    None when the runs logged no epoch."""
    exp = get_experiment(exp) if isinstance(exp, str) else exp
    metrics = curve_metrics(exp, curves)
    if not metrics:
        return None
    plt = _pyplot()
    labels, colors = {r.key: r.label for r in exp.rows}, row_colors(curves)
    height = max(3.6, 1.2 + 0.25 * (len(colors) + 2))  # the legend at the right holds every row (Table 8: 18)
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.9 * len(metrics) + 2.4, height), squeeze=False)
    legend: dict[str, Any] = {}  # label -> handle, over the panels (a row may log one metric only)
    for ax, metric in zip(axes[0], metrics):
        draw_curves(ax, curves, metric=metric, labels=labels, colors=colors)
        ax.set_title(_metric_label(metric), fontsize=8)
        for handle, name in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(name, handle)
    fig.legend(handles=list(legend.values()) + split_key(), fontsize=6, loc="upper left",
               bbox_to_anchor=(0.80, 0.95))
    fig.suptitle(wrap(f"{exp.artifact}: learning curves of the runs behind the table", TITLE_WIDTH), fontsize=9)
    epochs = int(curves["epoch"].max()) if len(curves) else 0
    caption = f"train dashed (open markers), val solid; {CURVE_CAPTION}; {epochs} epoch(s)."
    return _save(fig, path, caption, rect=(0, 0.06, 0.79, 1))


def plot_per_class_gain(gains: pd.Series, *, path: Path, title: str, top: int = 10,
                        xlabel: str = "top-1 gain (percentage points)"):
    """Bars of the largest per-class gains (green) and losses (red)."""
    plt = _pyplot()
    shown = pd.concat([gains.head(top), gains.tail(top)]) if len(gains) > 2 * top else gains
    shown = shown[~shown.index.duplicated()]
    fig, ax = plt.subplots(figsize=(6.5, max(2.5, 0.3 * len(shown) + 1.0)))
    ax.barh(range(len(shown)), shown.values, color=["#2a7d2e" if v >= 0 else "#b03a2e" for v in shown.values])
    ax.set_yticks(range(len(shown)))
    ax.set_yticklabels([wrap(k, 30) for k in shown.index], fontsize=7)
    ax.invert_yaxis()
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel(xlabel)
    ax.set_title(wrap(title, TITLE_WIDTH), fontsize=9)
    return _save(fig, path, "mean over seeds of each class's difference (new minus baseline).")


# --- Table 8 / A.1 / A.2 plots
def plot_transfer_bars(exp: Experiment | str, summary: pd.DataFrame, *, path: Path, runs: pd.DataFrame | None = None):
    """One panel per transfer dataset: top-1 of each probe / fine-tune row from 0, 95 % intervals,
    chance line; the random-init rows hatched, the paper's default (AVS + ROT probe) dark."""
    exp = get_experiment(exp) if isinstance(exp, str) else exp
    plt = _pyplot()
    rows = {r.key: r for r in exp.rows if r.protocol and r.dataset in ("ucf101", "hmdb51")}
    datasets = list(dict.fromkeys(r.dataset for r in rows.values()))
    fig, axes = plt.subplots(1, max(len(datasets), 1), figsize=(5.2 * max(len(datasets), 1), 4.2), squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        part = summary[summary["row"].isin([k for k, r in rows.items() if r.dataset == ds])]
        means = part["top1_mean"].to_numpy(dtype=float)
        half = part["top1_ci"].to_numpy(dtype=float)
        x = np.arange(len(part))
        bars = ax.bar(x, np.nan_to_num(means), color=[DEFAULT_COLOR if d else OTHER_COLOR for d in part["default"]])
        ok = ~np.isnan(half)
        ax.errorbar(x[ok], means[ok], yerr=half[ok], fmt="none", ecolor="k", capsize=4, lw=1)
        for bar, key in zip(bars, part["row"]):
            if not rows[key].init_row:
                bar.set_hatch("//")
        chance = chance_level("top1", runs if runs is not None else pd.DataFrame(), list(part["row"]))
        if chance is not None:
            ax.axhline(chance, color="0.4", ls="--", lw=1, label=f"chance {chance:.3g}")
            ax.legend(fontsize=7)
        ax.set_xticks(x)
        ax.set_xticklabels([wrap(str(lbl).rsplit(",", 1)[0], LABEL_WIDTH) for lbl in part["label"]], fontsize=6)
        ax.set_ylim(bottom=0)
        ax.set_ylabel("top-1 (%)")
        ax.set_title(ds, fontsize=9)
    fig.suptitle(f"{exp.artifact} / A.1 / A.2: transfer top-1 (hatched: random init)", fontsize=9)
    return _save(fig, path, INTERVAL_CAPTION + ".")


def plot_pretext_bars(exp: Experiment | str, summary: pd.DataFrame, *, path: Path):
    """Pretext metrics of the pretrain rows on val: rotation top-1 (%, chance 25) and the AVS loss."""
    exp = get_experiment(exp) if isinstance(exp, str) else exp
    plt = _pyplot()
    part = summary[summary["row"].isin([r.key for r in exp.rows if r.family.endswith("_pretrain")])]
    fig, axes = plt.subplots(1, 2, figsize=(8.5, 3.8))
    for ax, metric in ((axes[0], "rot_top1"), (axes[1], "loss_avs")):
        means = part[f"{metric}_mean"].to_numpy(dtype=float) if f"{metric}_mean" in part else np.zeros(len(part))
        half = part[f"{metric}_ci"].to_numpy(dtype=float) if f"{metric}_ci" in part else np.full(len(part), np.nan)
        x = np.arange(len(part))
        ax.bar(x, np.nan_to_num(means), color=OTHER_COLOR)
        ok = ~np.isnan(half)
        ax.errorbar(x[ok], means[ok], yerr=half[ok], fmt="none", ecolor="k", capsize=4, lw=1)
        if metric == "rot_top1":
            ax.axhline(25.0, color="0.4", ls="--", lw=1, label="chance 25")
            ax.legend(fontsize=7)
        ax.set_ylim(bottom=0)
        ax.set_xticks(x)
        ax.set_xticklabels([wrap(str(lbl).replace("pretrain ", ""), LABEL_WIDTH) for lbl in part["label"]], fontsize=7)
        ax.set_ylabel(METRIC_LABELS[metric], fontsize=8)
    fig.suptitle(wrap("pretext tasks on the val split (AVS-only rows have no rotation head, ROT-only rows no AVS)",
                      TITLE_WIDTH), fontsize=8)
    return _save(fig, path, INTERVAL_CAPTION + ".")

