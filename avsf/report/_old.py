"""Turn finished runs into the paper's tables and figures, beside the paper's claims.

The notebooks call only this module (and :mod:`avsf.experiments`):

- :func:`validate_parameters` checks a notebook's parameters before anything is submitted;
- :func:`submit_and_wait` submits the grid through :mod:`avsf.launch` and shows progress;
- :func:`collect` reads each run's ``final.json`` into a per-run DataFrame;
- :func:`summarize` gives mean ± std over seeds per row; :func:`claims_table` puts the
  paper's claims beside ours with the delta and a "held at this scale" verdict;
- :func:`render` writes ``table.csv``, ``table.md``, ``rows.csv`` and ``runs.csv``;
- ``plot_*`` draw the ablation bars, learning curves and per-class gains (PNG).

The verdict rule (:func:`verdict`), stated once here and in every ``table.md``:
ours = mean(claimed row) - mean(baseline row) over seeds; noise = sqrt(sd_b^2 + sd_c^2).
``within noise`` when |ours| <= noise (or ours is 0); ``no`` when ours has the opposite
sign of the claimed effect; ``yes`` when the sign matches and |ours| is within a factor 2 of
the claimed size (a claim that gives only a direction needs only the sign); otherwise
``direction only``. Compute claims (GFLOPs ratios and shares) hold when within 25 % of the
claimed value (relative). With one seed the noise is unknown and the verdict says so.
"""

from __future__ import annotations

import ast
import json
import math
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from avsf.errors import UserError
from avsf.experiments import (
    SCALES, ClaimLink, Experiment, GridEntry, check_scale, check_seeds, get_experiment,
    get_grid_entries, load_claims, prepare_data, project_root,
)

BACKENDS = ("debug", "local", "slurm")
SIZE_FACTOR = 2.0  # a delta "holds in size" within this factor of the claimed one
COMPUTE_TOLERANCE = 0.25  # relative tolerance of compute claims
VERDICT_RULE = (
    "ours = mean(claimed row) - mean(baseline row) over seeds; noise = sqrt(sd_b^2 + sd_c^2). "
    "'within noise' when |ours| <= noise; 'no' when the sign is opposite to the claim; 'yes' when "
    f"the sign matches and |ours| is within a factor {SIZE_FACTOR:g} of the claimed size (or the "
    "claim gives only a direction); else 'direction only'. Compute claims hold within "
    f"{COMPUTE_TOLERANCE:.0%} (relative). With one seed the noise is unknown.")


# --- parameters --------------------------------------------------------------------------
@dataclass
class Params:
    """A notebook's validated parameters."""

    notebook: str
    backend: str
    cluster: str | None
    scale: str
    seeds: list[int]
    data_roots: dict[str, str | None]
    output_dir: Path
    sweep_dir: Path
    max_parallel: int = 2
    overrides: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def experiment(self) -> Experiment:
        return get_experiment(self.notebook)


def injected_parameter_names(history: list[str] | None) -> list[str]:
    """Names assigned in papermill's injected cell (its source starts with ``# Parameters``),
    read from the kernel's input history (IPython's ``In``); [] when nothing was injected."""
    names: list[str] = []
    for source in history or []:
        if not isinstance(source, str) or not source.lstrip().startswith("# Parameters"):
            continue
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        names = [t.id for node in tree.body if isinstance(node, ast.Assign)
                 for t in node.targets if isinstance(t, ast.Name)]
    return names


def declared_parameter_names(source: str) -> list[str]:
    """Names assigned at the top level of a parameters cell's source."""
    tree = ast.parse(source)
    out = []
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        out += [t.id for t in targets if isinstance(t, ast.Name)]
    return out


def _check_choice(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise UserError(f"parameter {name}={value!r} is not allowed; choose one of {', '.join(map(str, allowed))}")


def validate_parameters(namespace: dict[str, Any], *, notebook: str, declared: list[str] | tuple[str, ...],
                        history: list[str] | None = None) -> Params:
    """Check a notebook's parameters before anything is submitted.

    Args:
        namespace: the notebook's globals after the parameters (and injected) cells.
        notebook: the experiment name (the notebook's name).
        declared: the names the ``parameters`` cell declares.
        history: the kernel's input history (``In``): papermill's injected cell is found in it,
            and any name it sets that ``declared`` lacks is refused (papermill only warns).
    Raises:
        UserError naming the declared parameters, the allowed values or the missing path.
    """
    get_experiment(notebook)
    unknown = [n for n in injected_parameter_names(history) if n not in declared]
    if unknown:
        raise UserError(f"unknown parameter(s) {', '.join(unknown)} for {notebook}; "
                        f"declared parameters: {', '.join(declared)}")
    missing = [n for n in declared if n not in namespace]
    if missing:
        raise UserError(f"parameters cell did not set {', '.join(missing)}")
    ns = {n: namespace[n] for n in declared}
    _check_choice("backend", ns.get("backend", "local"), BACKENDS)
    scale = ns.get("scale", "smoke")
    _check_choice("scale", scale, SCALES)
    cluster = ns.get("cluster") or None
    if ns.get("backend") == "slurm" and not cluster:
        raise UserError("backend='slurm' needs a cluster profile: set cluster (e.g. 'local' for the "
                        "test cluster, or the name of a profile in slurm/)")
    seeds = check_seeds(ns.get("seeds", [0]))
    roots = {}
    for key, value in ns.items():
        if key.startswith("data_root_"):
            dataset = key[len("data_root_"):]
            if value:
                path = Path(str(value)).expanduser()
                path = path if path.is_absolute() else project_root() / path
                if not path.exists():
                    raise UserError(f"parameter {key}={value!r}: no such folder {path}; give an "
                                    f"existing dataset folder, or None for the built-in data")
                roots[dataset] = str(path)
            else:
                roots[dataset] = None
    overrides = ns.get("overrides", []) or []
    if isinstance(overrides, str):
        overrides = [overrides]
    if not isinstance(overrides, (list, tuple)) or not all(isinstance(o, str) and "=" in o for o in overrides):
        raise UserError(f"parameter overrides={overrides!r} must be a list of 'section.key=value' strings, "
                        f"e.g. ['solver.epochs=2']")
    max_parallel = ns.get("max_parallel", 2)
    if isinstance(max_parallel, bool) or not isinstance(max_parallel, int) or max_parallel < 1:
        raise UserError(f"parameter max_parallel={max_parallel!r} must be a positive integer")
    default_out = f"results/{notebook}" if scale == "smoke" else f"results/{notebook}/{scale}"
    out = Path(str(ns.get("output_dir") or default_out)).expanduser()
    sweep = Path(str(ns.get("sweep_dir") or "sweeps")).expanduser()
    root = project_root()
    params = Params(notebook=notebook, backend=ns.get("backend", "local"), cluster=cluster, scale=scale,
                    seeds=seeds, data_roots=roots, max_parallel=max_parallel, overrides=list(overrides),
                    output_dir=out if out.is_absolute() else root / out,
                    sweep_dir=sweep if sweep.is_absolute() else root / sweep,
                    extra={k: v for k, v in ns.items() if k not in ("backend", "cluster", "scale", "seeds",
                                                                   "output_dir", "sweep_dir", "max_parallel",
                                                                   "overrides")
                           and not k.startswith("data_root_")})
    # building the grid now checks every config (and the paper scale's data roots) up front
    get_grid_entries(notebook, scale=scale, seeds=seeds, data_roots=roots, overrides=overrides)
    return params


# --- runs -----------------------------------------------------------------------------------
def run_dir_of(cfg, sweep_dir: str | Path) -> Path:
    """The launcher's run directory of a config: ``sweep_dir/<name>-<config_hash>``."""
    return Path(sweep_dir) / f"{cfg.name}-{cfg.config_hash()}"


def _launch():
    try:
        from avsf import launch  # noqa: PLC0415 (heavy; only notebooks that train need it)
    except ModuleNotFoundError as e:
        if e.name == "avsf.launch":
            raise UserError("avsf.launch is not available in this checkout: the launcher is "
                            "needed to train the grid") from e
        raise
    return launch


def submit_and_wait(params: Params, *, poll_s: float = 5.0, timeout_s: float | None = None,
                    out=sys.stdout) -> list[GridEntry]:
    """Submit every run of the notebook's grid that is not finished (the launcher reuses
    finished ones), then wait, printing one progress line whenever the count changes.

    Raises UserError naming the failed runs and their logs.
    """
    entries = get_grid_entries(params.notebook, scale=params.scale, seeds=params.seeds,
                               data_roots=params.data_roots, overrides=params.overrides)
    if not entries:
        return entries
    configs = list({e.config.config_hash(): e.config for e in entries}.values())
    prepare_data(configs)
    launch = _launch()
    params.sweep_dir.mkdir(parents=True, exist_ok=True)
    # self-supervised block: runs that start from another run (model.init_from) wait for it
    phases = [[c for c in configs if not c.model.init_from], [c for c in configs if c.model.init_from]]
    for phase in (p for p in phases if p):
        _submit_phase(launch, params, phase, poll_s=poll_s, timeout_s=timeout_s, out=out)
    return entries


def _submit_phase(launch, params: Params, configs, *, poll_s: float, timeout_s: float | None, out) -> None:
    """Submit `configs` and wait until every one finished; UserError naming the failed ones."""
    # a rerun of the notebook retries the runs that failed before; finished ones are reused
    launch.submit(configs, backend=params.backend, sweep_dir=params.sweep_dir, cluster=params.cluster,
                  max_parallel=params.max_parallel, retry_failed=True)
    start, last = time.monotonic(), None
    while True:
        done = [c for c in configs if (run_dir_of(c, params.sweep_dir) / "final.json").exists()]
        failed = _failed_runs(launch, params.sweep_dir, configs)
        line = f"[{params.notebook}] {len(done)}/{len(configs)} runs finished"
        if failed:
            line += f", {len(failed)} failed"
        if line != last:
            print(f"{line} ({time.monotonic() - start:.0f} s)", file=out, flush=True)
            last = line
        if failed and len(done) + len(failed) == len(configs):
            details = "\n".join(f"- {name}: {str(err).strip().splitlines()[-1] if str(err).strip() else '?'}"
                                 for name, err in failed.items())
            raise UserError(f"{len(failed)} run(s) failed in {params.sweep_dir} (their log.txt has the "
                            f"details; rerunning the notebook retries only those):\n{details}")
        if len(done) == len(configs):
            return
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            raise UserError(f"timed out after {timeout_s:.0f} s with {len(done)}/{len(configs)} runs finished")
        time.sleep(poll_s)


def _failed_runs(launch, sweep_dir: Path, configs) -> dict[str, str]:
    """{run name: error} of the grid's runs that the launcher reports as failed."""
    names = {run_dir_of(c, sweep_dir).name for c in configs}
    table = launch.status(sweep_dir)
    if not len(table):
        return {}
    bad = table[table["state"].eq("failed") & table["run"].isin(names)]
    return dict(zip(bad["run"], bad["error"]))


# --- reading results ----------------------------------------------------------------------------
def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """Nested dict -> {"a/b": value} (lists are kept as values)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "/"))
        else:
            out[key] = v
    return out


_METRIC_ALIASES = {
    "top1": ("top1", "test/top1", "metrics/top1", "test_top1"),
    "top5": ("top5", "test/top5", "metrics/top5", "test_top5"),
    "mAP": ("map", "mAP", "test/map", "metrics/map"),
    "verb_top1": ("verb_top1", "verb/top1", "test/verb/top1", "test/verb_top1"),
    "noun_top1": ("noun_top1", "noun/top1", "test/noun/top1", "test/noun_top1"),
    "action_top1": ("action_top1", "action/top1", "test/action/top1", "test/action_top1"),
    "params": ("params", "compute/params"),
    "gflops": ("gflops", "compute/gflops"),
    "gflops_audio": ("gflops_audio", "compute/gflops_audio"),
    "views": ("views", "num_views", "compute/views"),
}


def metric_of(final: dict, name: str) -> float | None:
    """One metric of a final.json (top-level or nested under test/metrics/compute)."""
    flat = flatten(final)
    for key in _METRIC_ALIASES.get(name, (name,)):
        value = flat.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


def per_class_of(final: dict) -> dict[str, float]:
    """Per-class accuracy (percent) of a final.json, keyed by class name (classes without a
    test video are left out). The evaluator writes ``per_class_accuracy`` as {name: value};
    runs without it (sigmoid heads, AVA detectors) give their ``per_class_ap``."""
    value = final.get("per_class_accuracy")
    if value is None:  # multi-label and detection runs (AVA): per-class AP
        value = final.get("per_class_ap")
    if isinstance(value, list):  # a list in class order, named by class_names
        names = final.get("class_names") or [str(i) for i in range(len(value))]
        value = dict(zip(names, value))
    if not isinstance(value, dict):
        return {}
    return {str(k): float(v) for k, v in value.items() if v is not None}


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read {path}: {e}") from e


def collect(exp: Experiment | str, entries: list[GridEntry], sweep_dir: str | Path) -> pd.DataFrame:
    """One row per (table row, seed): the run directory and every metric the table needs."""
    exp = get_experiment(exp) if isinstance(exp, str) else exp
    records = []
    for e in entries:
        run = run_dir_of(e.config, sweep_dir)
        final_path = run / "final.json"
        rec: dict[str, Any] = {"row": e.row, "seed": e.seed, "run_dir": str(run),
                               "config_hash": e.config.config_hash(), "finished": final_path.exists()}
        if final_path.exists():
            final = read_json(final_path)
            for m in set(exp.metrics) | {"params", "gflops", "gflops_audio", "views"}:
                rec[m] = metric_of(final, m)
        records.append(rec)
    return pd.DataFrame.from_records(records)


def fmt_mean_std(mean: float | None, std: float | None, n: int, digits: int = 1) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    if n > 1 and std is not None and not math.isnan(std):
        return f"{mean:.{digits}f} ± {std:.{digits}f}"
    return f"{mean:.{digits}f}"


def summarize(exp: Experiment | str, runs: pd.DataFrame, *, scale: str) -> pd.DataFrame:
    """Per table row: number of seeds, mean and std of each metric (std over seeds, ddof=1)."""
    exp = get_experiment(exp) if isinstance(exp, str) else exp
    rows = []
    for row in exp.rows_at(scale):
        rec: dict[str, Any] = {"row": row.key, "label": row.label, "default": row.default}
        part = runs[runs["row"] == row.key] if len(runs) else runs
        if "finished" in part.columns:
            part = part[part["finished"]]
        rec["seeds"] = int(len(part))
        for m in list(exp.metrics) + ["params", "gflops", "views"]:
            vals = pd.to_numeric(part[m], errors="coerce").dropna() if m in part.columns else pd.Series(dtype=float)
            rec[f"{m}_mean"] = float(vals.mean()) if len(vals) else float("nan")
            rec[f"{m}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else float("nan")
            rec[f"{m}_n"] = int(len(vals))
        rows.append(rec)
    return pd.DataFrame.from_records(rows)


# --- claims and verdicts ---------------------------------------------------------------------
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


def verdict(ours: float | None, noise: float | None, *, claimed: str, n_seeds: int) -> str:
    """Did a claimed delta hold? See the module docstring for the rule."""
    if ours is None or math.isnan(ours):
        return "not run at this scale"
    sign = expected_sign(claimed)
    size = parse_number(claimed)
    one_seed = " (1 seed: noise unknown)" if n_seeds < 2 else ""
    if ours == 0 or (noise is not None and not math.isnan(noise) and abs(ours) <= noise):
        return "within noise"
    if sign and (ours > 0) != (sign > 0):
        return "no" + one_seed
    only_direction = size is None or claimed.strip().lower().startswith(("lower", "higher", "slightly"))
    if only_direction or abs(size) / SIZE_FACTOR <= abs(ours) <= abs(size) * SIZE_FACTOR:
        return "yes" + one_seed
    return f"direction only (size x{abs(ours) / abs(size):.2g})" + one_seed


def compute_verdict(ours: float | None, claimed: str) -> str:
    target = parse_number(claimed)
    if ours is None or math.isnan(ours) or target is None:
        return "not run at this scale"
    return "yes" if abs(ours - target) <= COMPUTE_TOLERANCE * abs(target) else "no"


def _stat(summary: pd.DataFrame, row: str, metric: str) -> tuple[float, float, int]:
    part = summary[summary["row"] == row]
    if not len(part) or f"{metric}_mean" not in part.columns:
        return float("nan"), float("nan"), 0
    r = part.iloc[0]
    return float(r[f"{metric}_mean"]), float(r[f"{metric}_std"]), int(r[f"{metric}_n"])


def claims_table(exp: Experiment | str, summary: pd.DataFrame, *, scale: str,
                 extra: dict[str, dict[str, Any]] | None = None) -> pd.DataFrame:
    """The paper's claims this experiment speaks to, beside ours, with a verdict.

    ``extra`` maps a claim id to values computed elsewhere (``ours``, ``verdict``, ``note``):
    the learning-curve and per-class claims.
    """
    exp = get_experiment(exp) if isinstance(exp, str) else exp
    claims = {c["id"]: c for c in load_claims()}
    out = []
    for link in exp.claims:
        c = claims[link.claim_id]
        rec = {"claim": link.claim_id, "setting": c["setting"], "metric": c["metric"],
               "paper_baseline": f"{c['baseline_name']} {c['baseline_value']}".strip(),
               "paper_claimed": f"{c['claimed_name']} {c['claimed_value']}".strip(),
               "paper_delta": c["claimed_delta"], "ours_baseline": "-", "ours_claimed": "-",
               "ours_delta": "-", "seeds": 0, "held": "", "note": link.note}
        rec.update(_judge(exp, link, c, summary))
        rec.update((extra or {}).get(link.claim_id, {}))
        out.append(rec)
    return pd.DataFrame.from_records(out)


def _judge(exp: Experiment, link: ClaimLink, claim: dict, summary: pd.DataFrame) -> dict[str, Any]:
    if link.rule == "untestable":
        return {"held": "not testable here"}
    if link.rule in ("proxy_delta", "value"):
        return _judge_untestable_with_ours(link, summary)
    if link.rule in ("overfit_epoch", "per_class"):
        return {"held": "see curves" if link.rule == "overfit_epoch" else "see per-class plot"}
    if link.rule in ("ratio", "share"):
        return _judge_compute(exp, link, claim)
    stats = [_stat(summary, r, link.metric) for r in link.rows]
    n = min(s[2] for s in stats) if stats else 0
    if n == 0:
        return {"held": "not run at this scale", "seeds": 0}
    if link.rule == "up_then_down":
        (a, sa, _), (b, sb, _), (c, sc, _) = stats
        up = verdict(b - a, _noise(sa, sb), claimed="higher", n_seeds=n)
        down = verdict(c - b, _noise(sb, sc), claimed="lower", n_seeds=n)
        held = "yes" if up.startswith("yes") and down.startswith("yes") else f"up: {up}; down: {down}"
        return {"ours_baseline": f"{a:.1f}", "ours_claimed": f"{b:.1f}",
                "ours_delta": f"{b - a:+.1f} then {c - b:+.1f}", "seeds": n, "held": held}
    (b, sb, _), (a, sa, _) = stats
    ours = a - b
    claimed = claim["claimed_delta"]
    return {"ours_baseline": fmt_mean_std(b, sb, n), "ours_claimed": fmt_mean_std(a, sa, n),
            "ours_delta": f"{ours:+.1f}", "seeds": n,
            "held": verdict(ours, _noise(sa, sb), claimed=claimed, n_seeds=n)}


def _judge_untestable_with_ours(link: ClaimLink, summary: pd.DataFrame) -> dict[str, Any]:
    """Self-supervised block. Claims against a baseline we have no number for: not testable, but
    our row(s) are shown. ``value``: ours_claimed = the row's mean. ``proxy_delta``: rows
    (stand-in baseline, claimed row); ours_delta = claimed - stand-in, and ``held`` says whether
    that proxy difference is positive, negative or within noise (it is not the claim's delta)."""
    stats = [_stat(summary, r, link.metric) for r in link.rows]
    n = min(s[2] for s in stats) if stats else 0
    if n == 0:
        return {"held": "not testable here (not run at this scale)", "seeds": 0}
    if link.rule == "value":
        a, sa, _ = stats[0]
        return {"ours_claimed": fmt_mean_std(a, sa, n), "seeds": n, "held": "not testable here"}
    (b, sb, _), (a, sa, _) = stats
    ours = a - b
    noise = _noise(sa, sb)
    if ours == 0 or (not math.isnan(noise) and abs(ours) <= noise):
        proxy = "within noise"
    else:
        proxy = ("higher" if ours > 0 else "lower") + (" (1 seed: noise unknown)" if n < 2 else "")
    return {"ours_baseline": fmt_mean_std(b, sb, n), "ours_claimed": fmt_mean_std(a, sa, n),
            "ours_delta": f"{ours:+.1f}", "seeds": n,
            "held": f"not testable here; SSL vs random init: {proxy}"}


def _judge_compute(exp: Experiment, link: ClaimLink, claim: dict) -> dict[str, Any]:
    """Compute claims are about the paper's model size whatever the scale: count those configs
    (no training needed) with :func:`compute_of`."""
    from avsf.experiments import paper_model_config  # noqa: PLC0415

    counts = [compute_of(paper_model_config(exp, r)) for r in link.rows]
    if link.rule == "ratio":
        b, a = counts[0]["gflops"], counts[1]["gflops"]
        ours = 100.0 * (a / b - 1.0)
        return {"ours_baseline": f"{b:.2f} GFLOPs", "ours_claimed": f"{a:.2f} GFLOPs",
                "ours_delta": f"{ours:+.1f}%", "seeds": 0, "held": compute_verdict(ours, claim["claimed_delta"]),
                "note": "counted at the paper's model size (compute needs no training)"}
    total, audio = counts[0]["gflops"], counts[0]["gflops_audio"]
    ours = 100.0 * audio / total
    return {"ours_claimed": f"{audio:.2f} of {total:.2f} GFLOPs", "ours_delta": f"{ours:.1f}%", "seeds": 0,
            "held": compute_verdict(ours, claim["claimed_delta"]),
            "note": "counted at the paper's model size (compute needs no training)"}


def _noise(*stds: float) -> float:
    vals = [s for s in stds if s is not None and not math.isnan(s)]
    return math.sqrt(sum(s * s for s in vals)) if len(vals) == len(stds) else float("nan")


# --- rendering ------------------------------------------------------------------------------------
def rows_table(exp: Experiment | str, summary: pd.DataFrame) -> pd.DataFrame:
    """The readable per-row table: each metric as ``mean ± std`` (compute columns once)."""
    exp = get_experiment(exp) if isinstance(exp, str) else exp
    out = pd.DataFrame({"row": summary["row"], "setting": summary["label"], "seeds": summary["seeds"]})
    for m in exp.metrics:
        digits = 3 if m.startswith("loss") else 1  # losses (table8_ssl's pretext loss_avs) need more digits
        out[m] = [fmt_mean_std(r[f"{m}_mean"], r[f"{m}_std"], int(r[f"{m}_n"]), digits) for _, r in summary.iterrows()]
    if exp.compute:
        out["params (M)"] = [fmt_mean_std(r["params_mean"] / 1e6 if r["params_mean"] > 1e3 else r["params_mean"],
                                          None, 1, 2) for _, r in summary.iterrows()]
        out["GFLOPs x views"] = [
            "-" if math.isnan(r["gflops_mean"]) else
            f"{r['gflops_mean']:.3g} x {int(r['views_mean'])}" if not math.isnan(r["views_mean"]) else f"{r['gflops_mean']:.3g}"
            for _, r in summary.iterrows()]
    return out


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub markdown table (no dependency on `tabulate`)."""
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(str(v).replace("|", "\\|") for v in r.tolist()) + " |")
    return "\n".join(lines) + "\n"


def render(params: Params, *, runs: pd.DataFrame, rows: pd.DataFrame, claims: pd.DataFrame,
           figures: list[Path] | None = None, notes: list[str] | None = None) -> Path:
    """Write table.csv (claims beside ours), rows.csv, runs.csv and table.md to output_dir."""
    exp = params.experiment
    out = Path(params.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    claims.to_csv(out / "table.csv", index=False)
    rows.to_csv(out / "rows.csv", index=False)
    if len(runs):
        runs.to_csv(out / "runs.csv", index=False)
    md = [f"# {exp.artifact}: {exp.title}", "",
          f"Scale **{params.scale}**, seeds {params.seeds}, backend {params.backend}"
          + (f", overrides {params.overrides}" if params.overrides else "")
          + f". Generated by `notebooks/{exp.name}.ipynb`.", ""]
    if exp.note:
        md += [exp.note, ""]
    md += [f"## Our numbers (mean ± std over seeds)", "", to_markdown(rows)]
    if len(claims):
        md += ["## Beside the paper's claims", "", to_markdown(claims),
               f"Verdict rule: {VERDICT_RULE}", ""]
    for line in notes or []:
        md += [line, ""]
    for fig in figures or []:
        md += [f"![{fig.stem}]({fig.name})", ""]
    (out / "table.md").write_text("\n".join(md))
    return out


# --- plots ------------------------------------------------------------------------------------------
def _pyplot():
    import matplotlib  # noqa: PLC0415

    if "matplotlib.pyplot" not in sys.modules and "ipykernel" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def plot_ablation_bars(exp: Experiment | str, summary: pd.DataFrame, *, metric: str, path: Path):
    """Bars of one metric per row with error bars (std over seeds); the default row is dark."""
    exp = get_experiment(exp) if isinstance(exp, str) else exp
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(summary)), 3.2))
    means = summary[f"{metric}_mean"].to_numpy(dtype=float)
    stds = summary[f"{metric}_std"].fillna(0.0).to_numpy(dtype=float)
    colors = ["#1f4e79" if d else "#8fb3d9" for d in summary["default"]]
    ax.bar(range(len(summary)), means, yerr=stds, capsize=4, color=colors)
    ax.set_xticks(range(len(summary)))
    ax.set_xticklabels([str(x) for x in summary["label"]], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(f"{metric} (%)")
    ax.set_title(f"{exp.artifact}: {exp.title}", fontsize=9)
    finite = means[~pd.isna(means)]
    if len(finite):
        lo, hi = float(finite.min()), float(finite.max())
        pad = max(1.0, 0.5 * (hi - lo))
        ax.set_ylim(max(0.0, lo - pad - float(stds.max())), hi + pad + float(stds.max()))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return fig


# --- self-supervised block: Table 8 / A.1 / A.2 plots ------------------------------------------------
def plot_transfer_bars(exp: Experiment | str, summary: pd.DataFrame, *, path: Path):
    """One panel per transfer dataset: top-1 of each probe / fine-tune row, error bars = std over
    seeds; the random-init rows hatched, the paper's default (AVS + ROT probe) dark."""
    exp = get_experiment(exp) if isinstance(exp, str) else exp
    plt = _pyplot()
    rows = {r.key: r for r in exp.rows if r.protocol}
    datasets = list(dict.fromkeys(r.dataset for r in rows.values()))
    fig, axes = plt.subplots(1, max(len(datasets), 1), figsize=(4.8 * max(len(datasets), 1), 3.6), squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        part = summary[summary["row"].isin([k for k, r in rows.items() if r.dataset == ds])]
        means = part["top1_mean"].to_numpy(dtype=float)
        stds = part["top1_std"].fillna(0.0).to_numpy(dtype=float)
        colors = ["#1f4e79" if d else "#8fb3d9" for d in part["default"]]
        bars = ax.bar(range(len(part)), means, yerr=stds, capsize=4, color=colors)
        for bar, key in zip(bars, part["row"]):
            if not rows[key].init_row:
                bar.set_hatch("//")
        ax.set_xticks(range(len(part)))
        ax.set_xticklabels([str(x).rsplit(",", 1)[0] for x in part["label"]], rotation=30, ha="right", fontsize=7)
        ax.set_ylabel("top-1 (%)")
        ax.set_title(ds, fontsize=9)
    fig.suptitle(f"{exp.artifact} / A.1 / A.2: transfer top-1 (hatched: random init)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return fig


def plot_pretext_bars(exp: Experiment | str, summary: pd.DataFrame, *, path: Path):
    """Pretext metrics of the pretrain rows on val: rotation top-1 (%) and the AVS loss."""
    exp = get_experiment(exp) if isinstance(exp, str) else exp
    plt = _pyplot()
    part = summary[summary["row"].isin([r.key for r in exp.rows if r.family.endswith("_pretrain")])]
    fig, axes = plt.subplots(1, 2, figsize=(8.0, 3.2))
    for ax, metric, label in ((axes[0], "rot_top1", "rotation top-1 (%, chance 25)"), (axes[1], "loss_avs", "AVS loss (val)")):
        means = part[f"{metric}_mean"].to_numpy(dtype=float) if f"{metric}_mean" in part else []
        stds = part[f"{metric}_std"].fillna(0.0).to_numpy(dtype=float) if f"{metric}_std" in part else []
        ax.bar(range(len(part)), means, yerr=stds, capsize=4, color="#8fb3d9")
        ax.set_xticks(range(len(part)))
        ax.set_xticklabels([str(x).replace("pretrain ", "") for x in part["label"]], rotation=20, ha="right", fontsize=7)
        ax.set_ylabel(label, fontsize=8)
    fig.suptitle("pretext tasks on the val split (AVS-only rows have no rotation head, ROT-only rows no AVS)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return fig
# --- end self-supervised block


def read_curves(run_dir: str | Path) -> pd.DataFrame:
    """The epoch lines of metrics.jsonl as a long table: epoch, split (train/val), metric, value.

    The trainer writes one ``{"kind": "epoch", "epoch": e, "train_<m>": .., "val_<m>": ..}``
    line per epoch (and a ``"kind": "test"`` line at the end, not a curve)."""
    path = Path(run_dir) / "metrics.jsonl"
    records = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line) if line.strip() else None
            except json.JSONDecodeError:
                continue  # a torn last line of a killed run
            if not isinstance(rec, dict) or rec.get("kind", "epoch") != "epoch" or "epoch" not in rec:
                continue
            for key, value in rec.items():
                split, _, name = key.partition("_")
                if split in ("train", "val") and name and isinstance(value, (int, float)) \
                        and not isinstance(value, bool):
                    records.append({"epoch": float(rec["epoch"]), "split": split, "metric": name,
                                    "value": float(value)})
    df = pd.DataFrame.from_records(records, columns=["epoch", "split", "metric", "value"])
    # a resumed run may log an epoch twice: keep its last line
    return df.groupby(["epoch", "split", "metric"], as_index=False).last()


def curves_of(exp: Experiment | str, runs: pd.DataFrame) -> pd.DataFrame:
    """Learning curves of every run, tagged with its row and seed."""
    frames = []
    for _, r in runs.iterrows():
        c = read_curves(r["run_dir"])
        if len(c):
            frames.append(c.assign(row=r["row"], seed=r["seed"]))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["epoch", "split", "metric", "value", "row", "seed"])


def plot_learning_curves(exp: Experiment | str, curves: pd.DataFrame, *, metric: str, path: Path):
    """Train (dashed) and val (solid) curves of each row: mean over seeds, band = ±1 std."""
    exp = get_experiment(exp) if isinstance(exp, str) else exp
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    labels = {r.key: r.label for r in exp.rows}
    part = curves[curves["metric"] == metric]
    for i, row in enumerate(dict.fromkeys(part["row"])):
        color = f"C{i}"
        for split, style in (("train", "--"), ("val", "-")):
            s = part[(part["row"] == row) & (part["split"] == split)]
            if not len(s):
                continue
            g = s.groupby("epoch")["value"]
            mean, std = g.mean(), g.std(ddof=1).fillna(0.0)
            ax.plot(mean.index, mean.values, style, color=color, label=f"{labels.get(row, row)} ({split})")
            ax.fill_between(mean.index, mean - std, mean + std, color=color, alpha=0.15)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(f"{exp.artifact}: {exp.title}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return fig


def overfit_epoch(curves: pd.DataFrame, row: str, *, metric: str = "top1") -> float | None:
    """The epoch where a row's mean val metric peaks (after it, the model overfits)."""
    s = curves[(curves["row"] == row) & (curves["split"] == "val") & (curves["metric"] == metric)]
    if not len(s):
        return None
    mean = s.groupby("epoch")["value"].mean()
    return float(mean.idxmax())


def _mean_per_class(dirs: list[str | Path]) -> pd.Series:
    frames = [pd.Series(per_class_of(read_json(Path(d) / "final.json")), dtype=float) for d in dirs]
    return pd.concat(frames, axis=1).mean(axis=1) if frames else pd.Series(dtype=float)


def per_class_gains(base_runs: list[str | Path], new_runs: list[str | Path], *, relative: bool = False) -> pd.Series:
    """Per-class accuracy (or AP) of the new rows minus the baseline's (mean over seeds),
    sorted; ``relative``: new / baseline instead (classes where the baseline is 0 are left out)."""
    base, new = _mean_per_class(base_runs), _mean_per_class(new_runs)
    common = base.index.intersection(new.index)
    if relative:
        common = common[base[common].to_numpy() > 0]
        return (new[common] / base[common]).sort_values(ascending=False)
    return (new[common] - base[common]).sort_values(ascending=False)


def plot_per_class_gain(gains: pd.Series, *, path: Path, title: str, top: int = 10,
                        xlabel: str = "top-1 gain (percentage points)"):
    """Bars of the largest per-class gains and losses."""
    plt = _pyplot()
    shown = pd.concat([gains.head(top), gains.tail(top)]) if len(gains) > 2 * top else gains
    shown = shown[~shown.index.duplicated()]
    fig, ax = plt.subplots(figsize=(6.0, max(2.5, 0.28 * len(shown))))
    ax.barh(range(len(shown)), shown.values, color=["#2a7d2e" if v >= 0 else "#b03a2e" for v in shown.values])
    ax.set_yticks(range(len(shown)))
    ax.set_yticklabels(shown.index, fontsize=7)
    ax.invert_yaxis()
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return fig


# --- compute ------------------------------------------------------------------------------------
def compute_of(cfg) -> dict[str, float]:
    """Params, GFLOPs per view at the test crop, the audio share of them, and the test views
    (:func:`avsf.flops.count_model`; shapes only, on the meta device, so it is quick)."""
    from avsf.flops import count_model  # noqa: PLC0415 (imports the model stack)

    if cfg.model.task == "detect":
        # AVA detectors test fully convolutionally on the short-side-resized frame: the paper
        # counts them at 256 x 320 (short side x 1.25)
        side = cfg.data.test_short_side
        counts = count_model(cfg.model, side, width=int(round(side * 1.25)))
    else:
        counts = count_model(cfg.model, cfg.data.test_crop)
    return {"params": float(counts["params"]), "gflops": float(counts["gflops"]),
            "gflops_audio": float(counts.get("gflops_audio", float("nan"))),
            "views": float(cfg.data.num_temporal_views * cfg.data.num_spatial_views)}


# --- one notebook, end to end ----------------------------------------------------------------------
@dataclass
class Result:
    """What a notebook shows: the tables, the figures and where they were written."""

    runs: pd.DataFrame
    summary: pd.DataFrame
    rows: pd.DataFrame
    claims: pd.DataFrame
    figures: list[Path]
    markdown: str
    out_dir: Path


def build(params: Params, entries: list[GridEntry]) -> Result:
    """Collect the finished grid, compare with the paper, draw the plots, write the files."""
    exp = params.experiment
    if exp.name == "table1_architecture":
        return build_architecture(params)
    out = Path(params.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = collect(exp, entries, params.sweep_dir)
    runs = _add_ensembles(exp, runs, params)
    if exp.compute:
        runs = _add_compute(runs, entries, params)
    summary = summarize(exp, runs, scale=params.scale)
    figures: list[Path] = []
    extra: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    if "bars" in exp.plots and exp.metrics:
        metric = exp.metrics[0]
        figures.append(out / f"bars_{metric}.png")
        _close(plot_ablation_bars(exp, summary, metric=metric, path=figures[-1]))
    if "ssl_bars" in exp.plots:  # self-supervised block: transfer top-1 per dataset, pretext metrics
        figures.append(out / "bars_transfer_top1.png")
        _close(plot_transfer_bars(exp, summary, path=figures[-1]))
        figures.append(out / "bars_pretext.png")
        _close(plot_pretext_bars(exp, summary, path=figures[-1]))
    if "curves" in exp.plots:
        curves = curves_of(exp, runs)
        for metric in ("top1", "loss"):
            if len(curves[curves["metric"] == metric]):
                figures.append(out / f"curves_{metric}.png")
                _close(plot_learning_curves(exp, curves, metric=metric, path=figures[-1]))
        extra.update(_overfit_claims(exp, curves, runs))
    if "per_class" in exp.plots:
        extra_pc, fig, note = _per_class(exp, runs, out)
        extra.update(extra_pc)
        figures += [fig] if fig else []
        notes += [note] if note else []
    claims = claims_table(exp, summary, scale=params.scale, extra=extra)
    rows = rows_table(exp, summary)
    render(params, runs=runs, rows=rows, claims=claims, figures=figures, notes=notes)
    return Result(runs=runs, summary=summary, rows=rows, claims=claims, figures=figures,
                  markdown=(out / "table.md").read_text(), out_dir=out)


def _close(fig) -> None:
    """Free a saved figure (the notebook shows the PNG file, so nothing is drawn twice)."""
    _pyplot().close(fig)


def _add_compute(runs: pd.DataFrame, entries: list[GridEntry], params: Params) -> pd.DataFrame:
    cache: dict[str, dict[str, float]] = {}
    by_run = {str(run_dir_of(e.config, params.sweep_dir)): e for e in entries}
    runs = runs.copy()
    for i, r in runs.iterrows():
        entry = by_run.get(str(r["run_dir"]))
        if entry is None:
            continue
        key = entry.config.with_overrides(["seed=0"]).config_hash()
        if key not in cache:
            cache[key] = compute_of(entry.config)
        for k, v in cache[key].items():
            runs.loc[i, k] = v
    return runs


def _add_ensembles(exp: Experiment, runs: pd.DataFrame, params: Params) -> pd.DataFrame:
    """Evaluate each late-fusion row per seed: avsf.models.LateFusion on its members' runs."""
    extra = []
    for row in exp.rows_at(params.scale):
        if not row.is_ensemble:
            continue
        visual, audio = row.members
        for seed in params.seeds:
            def dir_of(key):
                hit = runs[(runs["row"] == key) & (runs["seed"] == seed) & runs["finished"]]
                return hit.iloc[0]["run_dir"] if len(hit) else None

            v_dir, a_dir = dir_of(visual), dir_of(audio)
            if v_dir is None or a_dir is None:
                continue
            metrics = late_fusion_metrics(v_dir, a_dir, out_dir=Path(params.sweep_dir) / "_late_fusion")
            extra.append({"row": row.key, "seed": seed, "run_dir": f"{v_dir} + {a_dir}",
                          "config_hash": "", "finished": True,
                          **{m: metric_of(metrics, m) for m in exp.metrics}})
    return pd.concat([runs, pd.DataFrame.from_records(extra)], ignore_index=True) if extra else runs


def _overfit_claims(exp: Experiment, curves: pd.DataFrame, runs: pd.DataFrame) -> dict[str, dict[str, Any]]:
    out = {}
    for link in exp.claims:
        if link.rule != "overfit_epoch":
            continue
        visual, audio = link.rows
        v_epoch, a_epoch = overfit_epoch(curves, visual), overfit_epoch(curves, audio)
        if v_epoch is None or a_epoch is None or v_epoch <= 0:
            out[link.claim_id] = {"held": "not run at this scale"}
            continue
        ratio = a_epoch / v_epoch
        # the claim: audio-only peaks at about a third of the visual model's training
        held = "yes" if 1 / 3 / SIZE_FACTOR <= ratio <= 1 / 3 * SIZE_FACTOR else "no"
        out[link.claim_id] = {
            "ours_baseline": f"val peak at epoch {v_epoch:g}", "ours_claimed": f"val peak at epoch {a_epoch:g}",
            "ours_delta": f"{ratio:.2f} of visual", "seeds": int(runs[runs["row"] == audio]["finished"].sum()),
            "held": held, "note": f"rule: audio-only val top-1 peaks at 1/3 of the visual model's peak epoch, "
                                  f"within a factor {SIZE_FACTOR:g}"}
    return out


def _per_class(exp: Experiment, runs: pd.DataFrame, out: Path):
    """Per-class gains of the claimed row over the baseline; the per-class claims name the
    paper's classes with an absolute gain (``swim +30.2``) or a ratio (``throw 2.0x``)."""
    link = next(c for c in exp.claims if c.rule == "per_class")
    base_key, new_key = link.rows
    def dirs(key):
        return list(runs[(runs["row"] == key) & runs["finished"]]["run_dir"])

    gains = per_class_gains(dirs(base_key), dirs(new_key))
    if not len(gains):
        return {c.claim_id: {"held": "not run at this scale"} for c in exp.claims if c.rule == "per_class"}, None, None
    ap = link.metric == "mAP"
    fig_path = out / "per_class_gain.png"
    _close(plot_per_class_gain(gains, path=fig_path, title=f"{exp.artifact}: AVSlowFast minus SlowFast, per class",
                               xlabel="AP gain (percentage points)" if ap else "top-1 gain (percentage points)"))
    top = "; ".join(f"{k} {v:+.1f}" for k, v in gains.head(5).items())
    bottom = "; ".join(f"{k} {v:+.1f}" for k, v in gains.tail(5)[::-1].items())
    ratios = per_class_gains(dirs(base_key), dirs(new_key), relative=True)
    claims = {c["id"]: c for c in load_claims()}
    extra = {}
    for c in exp.claims:
        if c.rule != "per_class":
            continue
        named = [part.strip().rsplit(" ", 1) for part in claims[c.claim_id]["claimed_delta"].split(";")]
        relative = all(value.strip().lower().endswith("x") for _, value in named)
        series = ratios if relative else gains
        pivot = 1.0 if relative else 0.0
        ours_named = {name: series.get(name) for name, _ in named if name in series.index}
        if not ours_named:
            held = "not comparable: the paper's classes are not in this dataset"
        else:
            agree = [(series[name] > pivot) == (parse_number(value) > pivot) for name, value in named
                     if name in series.index]
            held = f"{sum(agree)}/{len(agree)} named classes move the claimed way"
        gains_claimed = all((parse_number(value) or 0) > pivot for _, value in named)
        if relative:
            shown = ratios.head(5) if gains_claimed else ratios.tail(5)[::-1]
            ours = "; ".join(f"{k} {v:.2f}x" for k, v in shown.items())
        else:
            ours = top if gains_claimed else bottom
        extra[c.claim_id] = {"ours_delta": ours, "seeds": int(min(len(dirs(base_key)), len(dirs(new_key)))),
                             "held": held}
    note = f"Largest gains: {top}. Largest losses: {bottom}."
    if ap and len(ratios):
        note += " Largest relative gains: " + "; ".join(f"{k} {v:.2f}x" for k, v in ratios.head(3).items()) + "."
    return extra, fig_path, note


# --- late fusion (Table 6) --------------------------------------------------------------------------
def late_fusion_metrics(visual_dir: str | Path, audio_dir: str | Path, *, out_dir: str | Path | None = None) -> dict:
    """Test metrics of :class:`avsf.models.LateFusion` on two finished runs (the visual-only
    and the audio-only model of the same seed): their softmax scores averaged, multi-view, on
    the visual run's test split. Cached as JSON in ``out_dir`` (keyed by both runs)."""
    import torch  # noqa: PLC0415

    from avsf.engine.checkpoint import load_latest  # noqa: PLC0415
    from avsf.engine.evaluate import evaluate_model, load_run_config  # noqa: PLC0415
    from avsf.models import LateFusion, build_model  # noqa: PLC0415

    visual_dir, audio_dir = Path(visual_dir), Path(audio_dir)
    cache = Path(out_dir) / f"{visual_dir.name}+{audio_dir.name}.json" if out_dir else None
    if cache is not None and cache.exists():
        return read_json(cache)
    cfgs, models = [], []
    for run in (visual_dir, audio_dir):
        cfg = load_run_config(run)
        found = load_latest(run / "checkpoints")
        if found is None:
            raise UserError(f"{run} has no valid checkpoint to ensemble; rerun the grid")
        model = build_model(cfg.model)
        model.load_state_dict(found[0]["model"])
        cfgs.append(cfg)
        models.append(model)
    v_cfg, a_cfg = cfgs
    if (v_cfg.data.dataset, v_cfg.data.root, v_cfg.model.num_classes) != \
            (a_cfg.data.dataset, a_cfg.data.root, a_cfg.model.num_classes):
        raise UserError(f"cannot ensemble {visual_dir.name} and {audio_dir.name}: trained on different data")
    fused = LateFusion(models[0], models[1], multilabel=v_cfg.model.head == "sigmoid")
    # the dataset of a late-fusion config yields the visual and the audio inputs
    data_cfg = v_cfg.with_overrides({"model.arch": "late_fusion", "device": "cpu"})
    metrics = evaluate_model(fused, data_cfg, split="test", device=torch.device("cpu"))
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(metrics, sort_keys=True))
    return metrics


# --- Table 1 --------------------------------------------------------------------------------------
def reference_compute() -> pd.DataFrame:
    """REFERENCE.md's params and GFLOPs (fvcore convention) of the paper-size presets."""
    return pd.read_csv(Path(__file__).parent / "resources" / "reference_compute.csv")


ARCHITECTURE_PRESETS = {
    "smoke": ("slowfast_tiny", "avslowfast_tiny", "audio_only_tiny"),
    "small": ("slowfast_r50_4x16", "avslowfast_r50_4x16", "audio_only_r50"),
    "paper": ("slowfast_r50_4x16", "avslowfast_r50_4x16", "audio_only_r50"),
}
REFERENCE_TOLERANCE = 0.01  # our counts match REFERENCE.md's within 1 %


def stage_table(preset: str, *, crop: int | None = None) -> pd.DataFrame:
    """Per-stage output shapes of a preset (the paper's Table 1 layout)."""
    from avsf.config import get_preset  # noqa: PLC0415
    from avsf.models.network import describe_stages  # noqa: PLC0415

    cfg = get_preset(preset)
    rows = describe_stages(cfg.model, crop or cfg.data.train_crop)
    table = pd.DataFrame(rows, columns=["stage", "pathway", "shape"])
    table["shape"] = [" x ".join(map(str, s)) for s in table["shape"]]
    return table.pivot_table(index="stage", columns="pathway", values="shape", aggfunc="first", sort=False) \
        .reset_index().fillna("")


def compute_table() -> pd.DataFrame:
    """Params and GFLOPs at crops 224 and 256 of every Kinetics preset, beside the reference."""
    from avsf.config import get_preset, list_presets  # noqa: PLC0415
    from avsf.flops import count_model  # noqa: PLC0415

    ref = reference_compute().set_index("preset")
    rows = []
    for name in list_presets():
        cfg = get_preset(name)
        if cfg.data.dataset not in ("kinetics", "synthetic"):
            continue
        c224, c256 = count_model(cfg.model, 224), count_model(cfg.model, 256)
        rec = {"preset": name, "params (M)": round(c256["params"] / 1e6, 2),
               "GFLOPs @224": round(c224["gflops"], 2), "GFLOPs @256": round(c256["gflops"], 2),
               "audio GFLOPs @256": round(c256.get("gflops_audio", float("nan")), 2)}
        if name in ref.index:
            r = ref.loc[name]
            rec.update({"ref params (M)": r["params_m"], "ref GFLOPs @224": r["gflops_224"],
                        "ref GFLOPs @256": r["gflops_256"]})
            pairs = [(rec["params (M)"], r["params_m"]), (rec["GFLOPs @224"], r["gflops_224"]),
                     (rec["GFLOPs @256"], r["gflops_256"])]
            ok = all(abs(a - b) <= REFERENCE_TOLERANCE * b for a, b in pairs)
            rec["matches reference (1 %)"] = "yes" if ok else "no"
        else:
            rec["matches reference (1 %)"] = "no reference"
        rows.append(rec)
    return pd.DataFrame.from_records(rows).fillna("")


def build_architecture(params: Params) -> Result:
    """Table 1: stage shapes of the scale's presets and the compute of every preset."""
    exp = params.experiment
    out = Path(params.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    compute = compute_table()
    compute.to_csv(out / "table.csv", index=False)
    md = [f"# {exp.artifact}: {exp.title}", "", exp.note, "",
          "## Params and GFLOPs per view beside REFERENCE.md", "", to_markdown(compute)]
    for preset in ARCHITECTURE_PRESETS[params.scale]:
        stages = stage_table(preset)
        stages.to_csv(out / f"stages_{preset}.csv", index=False)
        md += [f"## Stage output shapes of `{preset}` (C x T x H x W; audio C x T x F)", "", to_markdown(stages)]
    (out / "table.md").write_text("\n".join(md))
    empty = pd.DataFrame()
    return Result(runs=empty, summary=empty, rows=compute, claims=empty, figures=[],
                  markdown=(out / "table.md").read_text(), out_dir=out)


# --- results/README.md ----------------------------------------------------------------------------
NOT_BUILT_NOTE = "no notebook yet: Table 7 (AVA) belongs to the AVA issue"


def results_overview(results_dir: str | Path) -> pd.DataFrame:
    """One row per claim of claims.csv: the notebook that tests it, the paper's delta, and at
    each scale rendered under ``results_dir`` (``<nb>/table.csv`` for smoke,
    ``<nb>/<scale>/table.csv`` otherwise) our delta and whether the claim held."""
    from avsf.experiments import EXPERIMENTS  # noqa: PLC0415

    results_dir = Path(results_dir)
    home = {link.claim_id: name for name, e in EXPERIMENTS.items() for link in e.claims}
    tables: dict[tuple[str, str], pd.DataFrame] = {}
    for name in EXPERIMENTS:
        for scale in SCALES:
            path = results_dir / name / ("table.csv" if scale == "smoke" else f"{scale}/table.csv")
            table = pd.read_csv(path, dtype=str).fillna("") if path.exists() else None
            if table is not None and "claim" in table.columns:  # Table 1's csv holds compute, no claims
                tables[(name, scale)] = table.set_index("claim")
    rows = []
    for c in load_claims():
        nb = home.get(c["id"])
        rec = {"claim": c["id"], "artifact": c["artifact"], "setting": c["setting"], "metric": c["metric"],
               "paper": c["claimed_delta"], "notebook": nb or "-"}
        for scale in SCALES:
            t = tables.get((nb, scale)) if nb else None
            if t is not None and c["id"] in t.index:
                rec[f"ours ({scale})"] = t.loc[c["id"], "ours_delta"]
                rec[f"held ({scale})"] = t.loc[c["id"], "held"]
            else:
                rec[f"ours ({scale})"] = "-"
                rec[f"held ({scale})"] = "not run" if nb else NOT_BUILT_NOTE
        rows.append(rec)
    frame = pd.DataFrame.from_records(rows)
    # drop the scales nothing was run at
    for scale in SCALES:
        if not any(s == scale for _, s in tables):
            frame = frame.drop(columns=[f"ours ({scale})", f"held ({scale})"])
    return frame
