"""results/README.md's claim table: every claim of claims.csv, per scale our delta, its
interval and the verdict, read from each notebook's rendered table.csv."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from avsf.experiments import SCALES, load_claims


def _interval(row: pd.Series) -> str:
    try:
        lo, hi = float(row.get("ci_low", "")), float(row.get("ci_high", ""))
    except ValueError:
        return "-"
    return "-" if math.isnan(lo) or math.isnan(hi) else f"[{lo:+.1f}, {hi:+.1f}]"


def results_overview(results_dir: str | Path) -> pd.DataFrame:
    """One row per claim (and comparison, where a claim has several) of claims.csv: the
    notebook that tests it, the paper's delta and, at each scale rendered under
    ``results_dir`` (``<nb>/table.csv`` for smoke, ``<nb>/<scale>/table.csv`` otherwise),
    our delta, its 95 % interval and the verdict."""
    from avsf.experiments import EXPERIMENTS  # noqa: PLC0415

    results_dir = Path(results_dir)
    home = {link.claim_id: name for name, e in EXPERIMENTS.items() for link in e.claims}
    tables: dict[tuple[str, str], pd.DataFrame] = {}
    for name in EXPERIMENTS:
        for scale in SCALES:
            path = results_dir / name / ("table.csv" if scale == "smoke" else f"{scale}/table.csv")
            table = pd.read_csv(path, dtype=str).fillna("") if path.exists() else None
            if table is not None and "claim" in table.columns:  # Table 1's csv holds compute, no claims
                tables[(name, scale)] = table
    rows = []
    for c in load_claims():
        nb = home.get(c["id"])
        links = [link for link in EXPERIMENTS[nb].claims if link.claim_id == c["id"]] if nb else [None]
        for k, link in enumerate(links):
            rec = {"claim": c["id"], "comparison": (link.label if link is not None else "") or "",
                   "artifact": c["artifact"], "setting": c["setting"], "metric": c["metric"],
                   "paper": c["claimed_delta"], "notebook": nb or "-"}
            for scale in SCALES:
                t = tables.get((nb, scale)) if nb else None
                hits = t[t["claim"] == c["id"]] if t is not None else None
                if hits is not None and len(hits) > k:
                    hit = hits.iloc[k]
                    rec[f"ours ({scale})"] = hit["ours_delta"]
                    rec[f"95% CI ({scale})"] = _interval(hit)
                    rec[f"verdict ({scale})"] = hit.get("verdict", "")
                else:
                    rec[f"ours ({scale})"] = rec[f"95% CI ({scale})"] = "-"
                    rec[f"verdict ({scale})"] = "not run" if nb else "no notebook"
            rows.append(rec)
    frame = pd.DataFrame.from_records(rows)
    for scale in SCALES:  # drop the scales nothing was run at
        if not any(s == scale for _, s in tables):
            frame = frame.drop(columns=[f"ours ({scale})", f"95% CI ({scale})", f"verdict ({scale})"])
    return frame
