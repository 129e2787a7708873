"""Do the published numbers reproduce? Rerun the runs behind a committed table and compare them
with the raw runs archived beside it (issue 17, part 3).

The runs are rebuilt from the table's stored settings (notebook, scale, seeds, overrides) by the
grid builder, exactly as the notebook builds them in a fresh clone; their names are their
config hashes, so a rebuilt run that hashes to another name means the code now builds another
recipe, and is reported as such. Each rerun is archived the way the notebook archives (machine
paths replaced) and compared with the committed copy: final.json and metrics.jsonl, timing
fields aside. On a machine with the committed runs' fingerprint (torch, CPU model and flags,
thread count: :mod:`avsf.fingerprint`) they must be identical; on another machine the
differences are listed beside the row's spread over seeds, which says whether they matter.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, TextIO

from avsf.errors import UserError

# final.json's headline number, the first one a table's runs have
HEADLINE = ("top1", "map", "action_top1", "verb_top1")
DEFAULT_SWEEP = Path("sweeps") / "verify"


@dataclass
class RunCheck:
    """One rerun against its committed copy."""

    run: str
    row: str
    seed: int
    identical: bool
    same_machine: bool
    metric: str | None = None
    committed: float | None = None
    rerun: float | None = None
    row_sd: float | None = None  # the committed row's standard deviation over seeds
    differing: list[str] = field(default_factory=list)  # final.json keys (and "metrics.jsonl") that differ

    def line(self) -> str:
        where = "same machine" if self.same_machine else "another machine"
        if self.identical:
            return f"{self.run} ({self.row}, seed {self.seed}): identical ({where})"
        number = ""
        if self.metric is not None and self.committed is not None and self.rerun is not None:
            spread = f", the row's sd over seeds {self.row_sd:.2f}" if self.row_sd is not None else ""
            number = (f"; {self.metric} {self.committed:.3f} committed, {self.rerun:.3f} now "
                      f"(diff {self.rerun - self.committed:+.3f}{spread})")
        return f"{self.run} ({self.row}, seed {self.seed}): DIFFERS ({where}) in {', '.join(self.differing)}{number}"


@dataclass
class Verification:
    """What :func:`verify_table` found."""

    notebook: str
    checks: list[RunCheck]
    not_built: list[str]  # archived runs the grid of this code no longer builds

    @property
    def reproduced(self) -> bool:
        return not self.not_built and all(c.identical for c in self.checks)

    @property
    def failed(self) -> bool:
        """Differences a reviewer cannot explain by the machine: same fingerprint, other numbers,
        or runs this code no longer builds."""
        return bool(self.not_built) or any(not c.identical and c.same_machine for c in self.checks)

    def summary(self) -> str:
        same = sum(c.identical for c in self.checks)
        text = f"{self.notebook}: {same} of {len(self.checks)} rerun(s) identical to the committed runs"
        if self.not_built:
            text += f"; {len(self.not_built)} committed run(s) not built by this code"
        if self.failed:
            text += " -- NOT reproduced"
        elif not self.reproduced:
            text += " -- differences only on another machine (see each run's fingerprint)"
        else:
            text += " -- reproduced exactly"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {"notebook": self.notebook, "reproduced": self.reproduced, "failed": self.failed,
                "not_built": self.not_built, "checks": [c.__dict__ for c in self.checks]}


def _comparable_final(final: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in final.items() if not k.endswith("wall_time_s") and k != "environment"}


def _comparable_metrics(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from avsf.engine.train import TIMING_FIELDS  # noqa: PLC0415

    return [{k: v for k, v in line.items() if k not in TIMING_FIELDS} for line in lines]


def _same_clock(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two final.json with the same train and test wall times: the same run's files (timings of
    two runs never agree to the millisecond)."""
    keys = ("train_wall_time_s", "test_wall_time_s")
    return all(k in a for k in keys) and all(a.get(k) == b.get(k) for k in keys)


def _headline(final: dict[str, Any]) -> str | None:
    return next((k for k in HEADLINE if isinstance(final.get(k), (int, float))), None)


def compare_run(committed: Any, rerun: Any, *, row: str, seed: int, row_sd: float | None) -> RunCheck:
    """Compare two archived runs (:class:`avsf.report.archive.ArchivedRun`)."""
    a, b = _comparable_final(committed.final), _comparable_final(rerun.final)
    differing = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    if _comparable_metrics(committed.metrics) != _comparable_metrics(rerun.metrics):
        differing.append("metrics.jsonl")
    metric = _headline(committed.final)
    return RunCheck(run=committed.name, row=row, seed=seed, identical=not differing,
                    same_machine=committed.final.get("environment") == rerun.final.get("environment"),
                    metric=metric, committed=committed.final.get(metric) if metric else None,
                    rerun=rerun.final.get(metric) if metric else None, row_sd=row_sd, differing=differing)


def _row_sds(table, archive) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for row, group in table.groupby("row"):
        values = [archive[r].final.get(_headline(archive[r].final) or "")
                  for r in group["run"] if r in archive]
        values = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
        out[str(row)] = statistics.stdev(values) if len(values) > 1 else None
    return out


def verify_table(output_dir: str | os.PathLike, *, sweep_dir: str | os.PathLike | None = None,
                 backend: str = "local", cluster: str | None = None, max_parallel: int | None = None,
                 rows: Sequence[str] | None = None, seeds: Sequence[int] | None = None,
                 data_roots: dict[str, str] | None = None, fresh: bool = False,
                 out: TextIO | None = None) -> Verification:
    """Rerun the archived runs of the table in ``output_dir`` (or those of ``rows`` / ``seeds``)
    in ``sweep_dir`` (default ``sweeps/verify/<notebook>`` of this checkout; finished reruns
    there are reused, so an interrupted check resumes; ``fresh`` empties it first) and compare.

    Raises UserError when the table has no archive, when ``sweep_dir`` is the sweep the table
    was made from (comparing a run with itself proves nothing), or when a rerun fails."""
    import pandas as pd  # noqa: PLC0415

    from avsf import launch  # noqa: PLC0415
    from avsf.experiments import project_root  # noqa: PLC0415
    from avsf.grid import DEFAULT_MAX_PARALLEL, build_grid, run_grid  # noqa: PLC0415
    from avsf.report.archive import (  # noqa: PLC0415
        ENSEMBLE_SEP, RUNS_CSV, archive_run, load_archive, stored_settings)

    out = sys.stdout if out is None else out
    output_dir = Path(output_dir)
    settings = stored_settings(output_dir)
    notebook = settings["notebook"]
    archive = load_archive(output_dir)
    table = pd.read_csv(output_dir / RUNS_CSV, dtype={"run": str}) if (output_dir / RUNS_CSV).is_file() else None
    if table is None or not {"row", "seed", "run"} <= set(table.columns):
        raise UserError(f"{output_dir / RUNS_CSV} is missing or lacks row/seed/run columns: this table "
                        f"records no runs to rerun")
    table = table[~table["run"].str.contains(ENSEMBLE_SEP, regex=False)]
    row_sds = _row_sds(table, archive)
    chosen = table
    if rows:
        unknown = sorted(set(rows) - set(table["row"].astype(str)))
        if unknown:
            raise UserError(f"rows {unknown} are not in {output_dir / RUNS_CSV}; its rows: "
                            f"{sorted(set(table['row'].astype(str)))}")
        chosen = chosen[chosen["row"].astype(str).isin(rows)]
    if seeds:
        chosen = chosen[chosen["seed"].astype(int).isin([int(s) for s in seeds])]
    if not len(chosen):
        raise UserError("no archived run matches the rows and seeds asked for")
    sweep = Path(sweep_dir) if sweep_dir is not None else project_root() / DEFAULT_SWEEP / notebook
    if fresh:
        shutil.rmtree(sweep, ignore_errors=True)

    grid = build_grid(notebook, scale=settings["scale"], seeds=sorted({int(s) for s in chosen["seed"]}),
                      overrides=[str(o) for o in settings.get("overrides") or []], data_roots=data_roots,
                      rows=sorted({str(r) for r in chosen["row"]}))
    configs = {r.name: r.config for r in grid.runs}
    built = set(configs)
    wanted = list(dict.fromkeys(chosen["run"]))
    not_built = [r for r in wanted if r not in built]
    for name in wanted:  # the very run the table came from is no check of it
        final = sweep / name / "final.json"
        if name in archive and final.is_file() and _same_clock(json.loads(final.read_text()), archive[name].final):
            raise UserError(f"{sweep / name} holds the run the table was made from, not a rerun: verify into "
                            f"another --sweep-dir (default sweeps/verify/<notebook>) or pass --fresh")
    print(f"[verify {notebook}] rerunning {len(wanted) - len(not_built)} run(s) of {output_dir} in {sweep}",
          file=out, flush=True)
    outcome = run_grid(grid, backend=backend, sweep_dir=sweep, cluster=cluster,
                       max_parallel=max_parallel or DEFAULT_MAX_PARALLEL, retry_failed=True, wait=True,
                       label=f"verify {notebook}", out=out)
    if outcome.failures:
        raise UserError(f"{len(outcome.failures)} rerun(s) failed in {sweep}: "
                        + "; ".join(outcome.failure_lines()))

    checks = []
    scratch = sweep / ".archived"
    shutil.rmtree(scratch, ignore_errors=True)
    compared = [r for _, r in chosen.drop_duplicates("run").iterrows()
                if str(r["run"]) not in not_built and str(r["run"]) in archive]
    try:
        for r in compared:  # archived as the notebook archives, then read back once
            archive_run(launch.run_dir_for(configs[str(r["run"])], sweep), scratch / "runs" / str(r["run"]))
        reruns = load_archive(scratch) if compared else {}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for r in compared:
        checks.append(compare_run(archive[str(r["run"])], reruns[str(r["run"])], row=str(r["row"]),
                                  seed=int(r["seed"]), row_sd=row_sds.get(str(r["row"]))))
    missing_from_archive = [n for n in wanted if n not in archive and n not in not_built]
    return Verification(notebook=notebook, checks=checks, not_built=not_built + missing_from_archive)
