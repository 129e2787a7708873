"""Tables from collected runs: per-row summaries, the paper's claims beside ours with the
verdict of :mod:`avsf.report.stats`, and the files a notebook writes."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from avsf.engine.io import atomic_write_text, disk_full_reported
from avsf.experiments import ClaimLink, Experiment, get_experiment, load_claims
from avsf.report import stats as S
from avsf.report.archive import record_table
from avsf.report.params import Params


def _exp(exp: Experiment | str) -> Experiment:
    return get_experiment(exp) if isinstance(exp, str) else exp


def _finished(runs: pd.DataFrame) -> pd.DataFrame:
    if not len(runs) or "finished" not in runs.columns:
        return runs
    return runs[runs["finished"].astype(bool)]


# --- per row ---------------------------------------------------------------------------------
def fmt_mean_std(mean: float | None, std: float | None, n: int, digits: int = 1) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    if n > 1 and std is not None and not math.isnan(std):
        return f"{mean:.{digits}f} ± {std:.{digits}f}"
    return f"{mean:.{digits}f}"


def summarize(exp: Experiment | str, runs: pd.DataFrame, *, scale: str) -> pd.DataFrame:
    """Per table row: seeds, and per metric the mean, std (ddof=1), n and the half-width of
    the 95 % t-interval of the mean over seeds (``{m}_ci``; nan below 2 seeds)."""
    exp = _exp(exp)
    done = _finished(runs)
    rows = []
    for row in exp.rows_at(scale):
        rec: dict[str, Any] = {"row": row.key, "label": row.label, "default": row.default}
        part = done[done["row"] == row.key] if len(done) else done
        rec["seeds"] = int(len(part))
        for m in (*exp.metrics, "params", "gflops", "views"):
            vals = pd.to_numeric(part[m], errors="coerce").dropna() if m in part.columns else pd.Series(dtype=float)
            n = len(vals)
            rec[f"{m}_mean"] = float(vals.mean()) if n else float("nan")
            rec[f"{m}_std"] = float(vals.std(ddof=1)) if n > 1 else float("nan")
            rec[f"{m}_n"] = n
            rec[f"{m}_ci"] = S.mean_ci_half(vals)
        rows.append(rec)
    return pd.DataFrame.from_records(rows)


def rows_table(exp: Experiment | str, summary: pd.DataFrame) -> pd.DataFrame:
    """The readable per-row table: each metric as ``mean ± std`` (compute columns once)."""
    exp = _exp(exp)
    out = pd.DataFrame({"row": summary["row"], "setting": summary["label"], "seeds": summary["seeds"]})
    for m in exp.metrics:
        digits = 3 if m.startswith("loss") else 1  # losses (table8_ssl's pretext loss_avs) need more digits
        out[m] = [fmt_mean_std(r[f"{m}_mean"], r[f"{m}_std"], int(r[f"{m}_n"]), digits) for _, r in summary.iterrows()]
    if exp.compute:
        out["params (M)"] = ["-" if math.isnan(r["params_mean"]) else f"{r['params_mean'] / 1e6:.2f}"
                             for _, r in summary.iterrows()]
        out["GFLOPs x views"] = [
            "-" if math.isnan(r["gflops_mean"]) else
            f"{r['gflops_mean']:.3g} x {int(r['views_mean'])}" if not math.isnan(r["views_mean"]) else f"{r['gflops_mean']:.3g}"
            for _, r in summary.iterrows()]
    return out


# --- claims ------------------------------------------------------------------------------------
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


def parse_number(text: str | None) -> float | None:
    """The first number in a claims.csv cell (``+1.4`` -> 1.4, ``+11%`` -> 11.0), else None."""
    if text is None:
        return None
    m = _NUMBER.search(str(text))
    return float(m.group()) if m else None


def expected_sign(claimed_delta: str) -> int:
    """+1 / -1 for a claimed effect; 0 when the text gives none."""
    text = str(claimed_delta).strip().lower()
    if text.startswith("lower") or text.startswith("-"):
        return -1
    if "higher" in text or text.startswith("+") or text.startswith("~+"):
        return 1
    if not re.match(r"^~?\d", text):
        return 0  # e.g. "up then down at 1": no single direction
    value = parse_number(text)
    return 1 if value and value > 0 else 0


def claimed_size(claimed_delta: str) -> float | None:
    """The claimed effect's size with its sign, or None when only a direction is claimed."""
    text = str(claimed_delta).strip().lower()
    if text.startswith(("lower", "higher", "slightly")):
        return None
    return parse_number(text)


def paired_differences(runs: pd.DataFrame, baseline: str, claimed: str, metric: str) -> pd.Series:
    """claimed minus baseline per seed, over the seeds both rows finished (index: seed)."""
    done = _finished(runs)
    if not len(done) or metric not in done.columns:
        return pd.Series(dtype=float)

    def per_seed(row):
        part = done[done["row"] == row]
        return pd.Series(pd.to_numeric(part[metric], errors="coerce").to_numpy(), index=part["seed"].to_numpy())

    b, c = per_seed(baseline), per_seed(claimed)
    common = b.dropna().index.intersection(c.dropna().index)
    return (c[common] - b[common]).sort_index()


def _row_values(runs: pd.DataFrame, row: str, metric: str, seeds) -> str:
    done = _finished(runs)
    part = done[(done["row"] == row) & done["seed"].isin(list(seeds))]
    vals = pd.to_numeric(part[metric], errors="coerce").dropna()
    return fmt_mean_std(float(vals.mean()) if len(vals) else None, float(vals.std(ddof=1)) if len(vals) > 1 else None,
                        len(vals))


TABLE_COLUMNS = ("claim", "comparison", "setting", "metric", "paper_baseline", "paper_claimed", "paper_delta",
                 "ours_baseline", "ours_claimed", "ours_delta", "ci_low", "ci_high", "mde", "seeds", "p", "p_holm",
                 "verdict", "size", "note")


def _blank(link: ClaimLink, claim: dict) -> dict[str, Any]:
    return {"claim": link.claim_id, "comparison": link.label or " -> ".join(link.rows),
            "setting": claim["setting"], "metric": claim["metric"],
            "paper_baseline": f"{claim['baseline_name']} {claim['baseline_value']}".strip(),
            "paper_claimed": f"{claim['claimed_name']} {claim['claimed_value']}".strip(),
            "paper_delta": claim["claimed_delta"], "ours_baseline": "-", "ours_claimed": "-", "ours_delta": "-",
            "ci_low": float("nan"), "ci_high": float("nan"), "mde": float("nan"), "seeds": 0,
            "p": float("nan"), "p_holm": float("nan"), "verdict": "", "size": "", "note": link.note}


def claims_table(exp: Experiment | str, runs: pd.DataFrame, *, scale: str,
                 extra: dict[str, dict[str, Any]] | None = None) -> pd.DataFrame:
    """The paper's claims this experiment speaks to, beside ours, with the verdict.

    Accuracy claims are judged on per-seed paired differences of ``runs`` (one row per table
    row and seed); their p-values are Holm-adjusted together (the table is the family).
    ``extra`` maps a claim id to values computed elsewhere (learning-curve, per-class claims).
    """
    exp = _exp(exp)
    claims = {c["id"]: c for c in load_claims()}
    records, tests = [], []  # tests: (record index, link, stats, raw p) of the hypothesis tests
    for link in exp.claims:
        c = claims[link.claim_id]
        rec = _blank(link, c)
        judged = _judge(exp, link, c, runs, scale=scale)
        pending = judged.pop("_test", None)
        rec.update(judged)
        rec.update((extra or {}).get(link.claim_id, {}))
        if pending is not None:
            tests.append((len(records), link, c, *pending))
        records.append(rec)
    adjusted = S.holm([t[4] for t in tests])
    for (i, link, c, stats, p), p_holm in zip(tests, adjusted):
        rec = records[i]
        rec["p"], rec["p_holm"] = p, p_holm
        if link.rule == "equivalence":
            rec["verdict"] = S.equivalence_verdict(stats.n, p_adjusted=p_holm, margin=link.margin, mde=rec["mde"])
        elif link.rule in ("proxy_delta",):
            word = S.directional_verdict(stats, p_adjusted=p_holm, sign=1, claimed_size=None)
            rec["verdict"] = f"not testable here; SSL probe vs random init: {word}"
        elif link.rule == "up_then_down":  # both steps must go the claimed way
            both = rec.pop("_both_up_down")
            rec["verdict"] = S.seeds_note(stats.n) if stats.n < S.MIN_SEEDS else \
                S.INCONCLUSIVE if not p_holm < S.ALPHA else S.SUPPORTS if both else S.CONTRADICTS
        else:
            size = claimed_size(c["claimed_delta"]) if link.rule == "delta" else None
            rec["verdict"] = S.directional_verdict(stats, p_adjusted=p_holm, sign=expected_sign(c["claimed_delta"]),
                                                   claimed_size=size)
            rec["size"] = S.size_agreement(stats, size, scale=scale) if link.rule == "delta" else ""
    for rec in records:
        rec.pop("_both_up_down", None)
    return pd.DataFrame.from_records(records, columns=list(TABLE_COLUMNS))


def _judge(exp: Experiment, link: ClaimLink, claim: dict, runs: pd.DataFrame, *, scale: str) -> dict[str, Any]:
    """Our side of one claim; a ``_test`` entry (Paired stats, raw p) when it is a test."""
    if link.rule == "untestable":
        return {"verdict": "not testable here"}
    if link.rule in ("overfit_epoch", "per_class"):
        return {"verdict": "see curves" if link.rule == "overfit_epoch" else "see per-class plot"}
    if link.rule in ("ratio", "share"):
        return _judge_compute(exp, link, claim)
    if link.rule == "value":  # a row's number, no baseline to test against
        done = _finished(runs)
        n = int((done["row"] == link.rows[0]).sum()) if len(done) else 0
        if not n:
            return {"verdict": "not testable here (not run at this scale)"}
        return {"ours_claimed": _row_values(runs, link.rows[0], link.metric, done["seed"].unique()), "seeds": n,
                "verdict": "not testable here"}
    if link.rule == "up_then_down":
        a, b, c = link.rows
        up, down = (paired_differences(runs, a, b, link.metric), paired_differences(runs, b, c, link.metric))
        if not len(up) or not len(down):
            return {"verdict": "not run at this scale"}
        s_up, s_down = S.paired_stats(up), S.paired_stats(-down)
        # intersection-union: the claim holds when both steps do, so its p is the larger one
        weaker = s_up if s_up.p >= s_down.p else s_down
        p = max(s_up.p, s_down.p)
        return {"ours_baseline": _row_values(runs, a, link.metric, up.index),
                "ours_claimed": _row_values(runs, b, link.metric, up.index),
                "ours_delta": f"{s_up.mean:+.1f} [{s_up.ci_low:+.1f}, {s_up.ci_high:+.1f}] then "
                              f"{-s_down.mean:+.1f} [{-s_down.ci_high:+.1f}, {-s_down.ci_low:+.1f}]",
                "ci_low": weaker.ci_low, "ci_high": weaker.ci_high, "mde": weaker.mde, "seeds": min(s_up.n, s_down.n),
                "_both_up_down": s_up.mean > 0 and s_down.mean > 0, "_test": (weaker, p),
                "note": (link.note + " " if link.note else "") + "ci and mde: the weaker step (up, or down "
                        "sign-flipped); p: the larger of the two steps' (both must hold)"}
    base, new = link.rows
    d = paired_differences(runs, base, new, link.metric)
    if not len(d):
        return {"verdict": "not testable here (not run at this scale)" if link.rule == "proxy_delta"
                else "not run at this scale"}
    ps = S.paired_stats(d)
    out = {"ours_baseline": _row_values(runs, base, link.metric, d.index),
           "ours_claimed": _row_values(runs, new, link.metric, d.index), "ours_delta": f"{ps.mean:+.1f}",
           "ci_low": ps.ci_low, "ci_high": ps.ci_high, "mde": ps.mde, "seeds": ps.n}
    if link.rule == "equivalence":
        out["mde"] = S.tost_mde(ps.sd, ps.n)
        out["_test"] = (ps, S.tost_p(d, margin=link.margin))
        out["note"] = (link.note + "; " if link.note else "") + f"TOST margin ±{link.margin:g}"
    elif ps.n < 2:
        out["verdict"] = S.seeds_note(ps.n) if link.rule != "proxy_delta" else \
            f"not testable here; SSL probe vs random init: {S.seeds_note(ps.n)}"
        out["size"] = S.size_agreement(ps, None, scale=scale) if link.rule == "delta" else ""
    else:
        out["_test"] = (ps, ps.p)
    return out


def _judge_compute(exp: Experiment, link: ClaimLink, claim: dict) -> dict[str, Any]:
    """Compute claims are about the paper's model size whatever the scale: count those configs
    (no training needed)."""
    from avsf.engine.evaluate import compute_cost  # noqa: PLC0415 (imports the model stack)
    from avsf.experiments import paper_model_config  # noqa: PLC0415

    counts = [compute_cost(paper_model_config(exp, r)) for r in link.rows]
    note = "counted at the paper's model size (compute needs no training)"
    target = parse_number(claim["claimed_delta"])
    if link.rule == "ratio":
        b, a = counts[0]["gflops"], counts[1]["gflops"]
        ours = 100.0 * (a / b - 1.0)
        return {"ours_baseline": f"{b:.2f} GFLOPs", "ours_claimed": f"{a:.2f} GFLOPs", "ours_delta": f"{ours:+.1f}%",
                "verdict": S.compute_verdict(ours, target), "note": note}
    total, audio = counts[0]["gflops"], counts[0]["gflops_audio"]
    ours = 100.0 * audio / total
    return {"ours_claimed": f"{audio:.2f} of {total:.2f} GFLOPs", "ours_delta": f"{ours:.1f}%",
            "verdict": S.compute_verdict(ours, target), "note": note}


# --- files -----------------------------------------------------------------------------------------
def _fmt_cell(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.3g}" if abs(value) < 0.01 else f"{value:.2f}"
    return str(value)


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub markdown table (no dependency on `tabulate`); floats at 2 decimals, nan blank."""
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(_fmt_cell(v).replace("|", "\\|") for v in r.tolist()) + " |")
    return "\n".join(lines) + "\n"


def render(params: Params, *, runs: pd.DataFrame, rows: pd.DataFrame, claims: pd.DataFrame,
           figures: list[Path] | None = None, notes: list[str] | None = None,
           run_dirs: Mapping[str, Path] | None = None, ensemble_cache: Path | None = None) -> str:
    """Write table.csv (claims beside ours), rows.csv and table.md to output_dir, and the trace
    of the table (:func:`avsf.report.archive.record_table`: runs.csv by run name, the runs from
    ``run_dirs`` and the late-fusion cache archived under runs/, provenance.json).

    Returns table.md's text without its figure links: the links are relative to output_dir,
    right for a viewer of that folder (a code host) and broken anywhere else, e.g. in the
    notebook, which shows the figures themselves."""
    out = Path(params.output_dir)
    with disk_full_reported(out):  # a full disk says where and how much; each file is replaced whole or not at all
        return _render(params, out=out, runs=runs, rows=rows, claims=claims, figures=figures, notes=notes,
                       run_dirs=run_dirs, ensemble_cache=ensemble_cache)


def _render(params: Params, *, out: Path, runs: pd.DataFrame, rows: pd.DataFrame, claims: pd.DataFrame,
            figures: list[Path] | None, notes: list[str] | None, run_dirs: Mapping[str, Path] | None,
            ensemble_cache: Path | None) -> str:
    exp = params.experiment
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "table.csv", claims.to_csv(index=False))
    atomic_write_text(out / "rows.csv", rows.to_csv(index=False))
    provenance = record_table(runs, params=params, run_dirs=run_dirs, fusion_cache=ensemble_cache)
    md = [f"# {exp.artifact}: {exp.title}", "",
          f"Scale **{params.scale}**, seeds {params.seeds}, backend {params.backend}"
          + (f", overrides {params.overrides}" if params.overrides else "")
          + f". Generated by `notebooks/{exp.name}.ipynb`.", "", provenance, ""]
    if exp.note:
        md += [exp.note, ""]
    md += ["## Our numbers (mean ± std over seeds)", "", to_markdown(rows)]
    if len(claims):
        shown = claims.drop(columns=[c for c in ("setting", "paper_baseline", "paper_claimed") if c in claims])
        md += ["## Beside the paper's claims", "", to_markdown(shown),
               f"Verdict rule ({len(claims['p'].dropna()) if 'p' in claims else 0} tests in this table, "
               f"Holm-adjusted together): {S.RULE}", ""]
    for line in notes or []:
        md += [line, ""]
    links = [line for fig in figures or [] for line in (f"![{fig.stem}]({fig.name})", "")]
    atomic_write_text(out / "table.md", "\n".join(md + links))
    return "\n".join(md)
