"""Read finished runs: final.json metrics, config.json class counts, metrics.jsonl curves.

A run is named by its directory name (``<preset>-<config_hash>``); where that directory lives
is a separate mapping (``run_dirs``: run name -> path), so the tables can be rebuilt from the
sweep directory or from a copy of the runs elsewhere.

Metric names are the ones :func:`avsf.engine.evaluate.write_final` writes, read as they are
(no aliases): ``top1``, ``top5``, ``map``, ``verb_top1``, ``noun_top1``, ``action_top1``,
``rot_top1``, ``loss_avs``, and the compute of the trained model ``params``, ``gflops``,
``gflops_audio``, ``views``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from avsf.errors import UserError
from avsf.experiments import Experiment, GridEntry, get_experiment
from avsf.launch import run_name

COMPUTE_METRICS = ("params", "gflops", "gflops_audio", "views")
ENSEMBLE_SEP = " + "  # the run of a late-fusion cell: "<visual run> + <audio run>"
LATE_FUSION_DIR = "_late_fusion"  # the late-fusion metrics cache, inside a sweep dir (and an archive)
# the class counts chance levels are drawn from (config.json's model section, resolved by the trainer)
CLASS_COUNTS = ("num_classes", "num_verbs", "num_nouns")


def run_dir_of(cfg, sweep_dir: str | Path) -> Path:
    """The launcher's run directory of a config: ``sweep_dir/<name>-<config_hash>``."""
    return Path(sweep_dir) / run_name(cfg)


def late_fusion_cache_name(visual_run: str, audio_run: str) -> str:
    """The file of an ensemble's cached metrics in ``<sweep>/_late_fusion/``, named by both runs."""
    return f"{visual_run}+{audio_run}.json"


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read {path}: {e}") from e


def metric_of(final: dict, name: str) -> float | None:
    """A numeric top-level metric of a final.json, else None."""
    value = final.get(name)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def per_class_of(final: dict) -> dict[str, float]:
    """Per-class accuracy (percent) of a final.json, keyed by class name (classes without a
    test video are left out); sigmoid heads and AVA detectors give ``per_class_ap``."""
    value = final.get("per_class_accuracy")
    if value is None:
        value = final.get("per_class_ap")
    if not isinstance(value, dict):
        return {}
    return {str(k): float(v) for k, v in value.items() if v is not None}


def grid_index(entries: list[GridEntry]) -> pd.DataFrame:
    """The grid as a table: row, seed, run (directory name), config_hash."""
    return pd.DataFrame.from_records(
        [{"row": e.row, "seed": e.seed, "run": run_name(e.config), "config_hash": e.config.config_hash()}
         for e in entries], columns=["row", "seed", "run", "config_hash"])


def grid_run_dirs(entries: list[GridEntry], sweep_dir: str | Path) -> dict[str, Path]:
    """run name -> run directory in ``sweep_dir`` for every run of the grid."""
    return {run_name(e.config): run_dir_of(e.config, sweep_dir) for e in entries}


def read_runs(exp: Experiment | str, index: pd.DataFrame, run_dirs: Mapping[str, Path]) -> pd.DataFrame:
    """One row per (table row, seed) of ``index`` (row, seed, run, config_hash): whether the
    run finished and every metric the table needs, from ``run_dirs[run]/final.json``; the
    class counts from its config.json."""
    exp = get_experiment(exp) if isinstance(exp, str) else exp
    records = []
    for _, e in index.iterrows():
        run = Path(run_dirs[e["run"]]) if e["run"] in run_dirs else None
        final_path = run / "final.json" if run is not None else None
        finished = final_path is not None and final_path.exists()
        rec: dict[str, Any] = {"row": e["row"], "seed": int(e["seed"]), "run": e["run"],
                               "config_hash": e["config_hash"], "finished": finished}
        if finished:
            final = read_json(final_path)
            for m in dict.fromkeys((*exp.metrics, *COMPUTE_METRICS)):
                rec[m] = metric_of(final, m)
            model = read_json(run / "config.json").get("model", {}) if (run / "config.json").exists() else {}
            rec.update({k: model.get(k) for k in CLASS_COUNTS})
        records.append(rec)
    return pd.DataFrame.from_records(records)


def collect(exp: Experiment | str, entries: list[GridEntry], sweep_dir: str | Path) -> pd.DataFrame:
    """:func:`read_runs` of a grid whose runs live in ``sweep_dir``."""
    return read_runs(exp, grid_index(entries), grid_run_dirs(entries, sweep_dir))


# --- learning curves ------------------------------------------------------------------------
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


def curves_of(runs: pd.DataFrame, run_dirs: Mapping[str, Path]) -> pd.DataFrame:
    """Learning curves of every run of ``runs`` that has a directory, tagged with row and seed."""
    frames = []
    for _, r in runs.iterrows():
        if r["run"] not in run_dirs:
            continue  # e.g. a late-fusion ensemble: no training of its own
        c = read_curves(run_dirs[r["run"]])
        if len(c):
            frames.append(c.assign(row=r["row"], seed=r["seed"]))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["epoch", "split", "metric", "value", "row", "seed"])


# --- per-class results ----------------------------------------------------------------------------
def per_class_table(dirs: list[str | Path]) -> pd.DataFrame:
    """Per-class accuracy (or AP) [classes x runs] of the runs in ``dirs``."""
    frames = [pd.Series(per_class_of(read_json(Path(d) / "final.json")), dtype=float) for d in dirs]
    return pd.concat(frames, axis=1) if frames else pd.DataFrame(dtype=float)


def per_class_gains(base_runs: list[str | Path], new_runs: list[str | Path], *, relative: bool = False) -> pd.Series:
    """Per-class accuracy (or AP) of the new rows minus the baseline's (mean over seeds),
    sorted; ``relative``: new / baseline instead (classes where the baseline is 0 are left out)."""
    base, new = per_class_table(base_runs).mean(axis=1), per_class_table(new_runs).mean(axis=1)
    common = base.index.intersection(new.index)
    if relative:
        common = common[base[common].to_numpy() > 0]
        return (new[common] / base[common]).sort_values(ascending=False)
    return (new[common] - base[common]).sort_values(ascending=False)
