"""A notebook's runs: its grid through the grid runner (:func:`avsf.grid.run_grid`), the same
door as ``avsf sweep``, with progress on the notebook's output."""

from __future__ import annotations

import sys
from typing import TextIO

from avsf.errors import UserError
from avsf.experiments import GridEntry
from avsf.report.params import Params


def submit_and_wait(params: Params, *, poll_s: float = 5.0, timeout_s: float | None = None,
                    out: TextIO | None = None) -> list[GridEntry]:
    """Submit every run of the notebook's grid that is not finished (finished ones are reused,
    failed ones retried: rerunning the notebook retries only those), then wait, showing a
    progress bar (:class:`avsf.grid.GridProgress`: the notebook widget, done / running / failed, an
    ETA; each failed run named as soon as it fails) and the launcher's lines on ``out``, never
    on stderr; the grid is the one :func:`validate_parameters` built (``params.grid``).

    In render-only mode (``params.render_only``) nothing is submitted: the entries are those
    the table's archive records (:func:`avsf.report.archive.archived_entries`).

    ``out``: default stdout (read at the call: a kernel replaces it).

    Raises UserError naming each failed run and its reason in one line.
    """
    out = sys.stdout if out is None else out
    if params.render_only:
        from avsf.report.archive import archived_or_none  # noqa: PLC0415

        entries = archived_or_none(params.output_dir)
        print(f"[{params.notebook}] render-only: {len(entries)} archived run(s) in runs/ beside the table, "
              f"nothing submitted", file=out, flush=True)
        return entries
    from avsf.grid import run_grid  # noqa: PLC0415 (the launcher; only notebooks that train need it)

    grid = params.grid
    if not grid.runs:
        return grid.entries
    outcome = run_grid(grid, backend=params.backend, sweep_dir=params.sweep_dir, cluster=params.cluster,
                       max_parallel=params.max_parallel, retry_failed=True, wait=True, timeout_s=timeout_s,
                       poll_s=poll_s, label=params.notebook, out=out)
    if outcome.failures:
        details = "\n".join(f"- {line}" for line in outcome.failure_lines())
        raise UserError(f"{len(outcome.failures)} run(s) failed in {params.sweep_dir} (their log.txt has the "
                        f"details; rerunning the notebook retries only those):\n{details}")
    return grid.entries
