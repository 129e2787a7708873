"""Submit a notebook's grid through :mod:`avsf.launch` and wait, printing progress.

Kept apart from the tables: the grid runner (one door for every entry point) will own it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from avsf.errors import UserError
from avsf.experiments import GridEntry, get_grid_entries, prepare_data
from avsf.report.collect import run_dir_of
from avsf.report.params import Params


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

    In render-only mode (``params.render_only``) nothing is submitted: the entries are those
    the table's archive records (:func:`avsf.report.archive.archived_entries`).

    Raises UserError naming the failed runs and their logs.
    """
    if params.render_only:
        from avsf.report.archive import archived_or_none  # noqa: PLC0415

        entries = archived_or_none(params.output_dir)
        print(f"[{params.notebook}] render-only: {len(entries)} archived run(s) in runs/ beside the table, "
              f"nothing submitted", file=out, flush=True)
        return entries
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
