"""avsf report: render tables again from results/ alone (the archived runs), and check results/."""

from __future__ import annotations

HELP = ("render notebook tables again from results/<nb>/ alone (its runs/ archive and provenance.json; "
        "no sweeps/ needed), with --html also the executed notebook as results/<nb>/notebook.html, and check "
        "that results/ names no path of this machine")


def add_arguments(p) -> None:
    p.add_argument("notebooks", nargs="*", metavar="NOTEBOOK",
                   help="experiment names (e.g. ablate_droppath); default: every table under --results")
    p.add_argument("--results", default="results", metavar="DIR", help="the results folder (default: results)")
    p.add_argument("--scale", default="smoke", help="smoke (results/<nb>/), small or paper (results/<nb>/<scale>/)")
    p.add_argument("--check-only", action="store_true",
                   help="render nothing; only check that the results folder names no machine path")
    p.add_argument("--html", action="store_true",
                   help="also write each table's executed notebook (results/_executed/<nb>.ipynb, as `make "
                        "reproduce` / `make tables` leave it) as notebook.html beside the table: outputs and figures "
                        "included, viewable in any browser, machine paths scrubbed; a named notebook must have one")


def _table_dirs(results, names: list[str], scale: str):
    from avsf.report.archive import PROVENANCE_FILE
    from avsf.errors import UserError
    from avsf.experiments import get_experiment, list_experiments

    for name in names:
        get_experiment(name)  # unknown names list the known ones
    chosen = names or list_experiments()
    dirs = {n: results / n if scale == "smoke" else results / n / scale for n in chosen}
    missing = [d for d in dirs.values() if not (d / PROVENANCE_FILE).is_file()]
    if names and missing:
        raise UserError(f"no rendered table with a provenance.json at {', '.join(map(str, missing))}; run the "
                        f"notebook once (with its sweep) to archive its runs")
    return {n: d for n, d in dirs.items() if d not in missing}


def _write_html(results, tables: dict, *, named: bool) -> None:
    """notebook.html beside each table from its executed notebook; one not executed is skipped
    unless it was named."""
    from avsf.report.notebook_html import HTML_FILE, executed_path, notebook_html

    for name, out in tables.items():
        executed = executed_path(results, name)
        if executed.is_file() or named:
            print(f"{notebook_html(executed, out / HTML_FILE)}: {executed.name} with its outputs")


def run(args) -> int:
    from pathlib import Path

    from avsf.report.archive import check_no_machine_paths, render_from_archive
    from avsf.errors import UserError

    results = Path(args.results)
    if not results.is_dir():
        raise UserError(f"--results {results}: no such folder")
    dirs = {}
    if not args.check_only or args.html:
        dirs = _table_dirs(results, list(args.notebooks), args.scale)
        if not dirs:
            raise UserError(f"no table under {results} has a provenance.json yet; run the notebooks once "
                            f"(with their sweeps) to archive their runs")
    if not args.check_only:
        for out in dirs.values():
            result = render_from_archive(out)
            print(f"{out}: table.md, table.csv, rows.csv, runs.csv and {len(result.figures)} figure(s) "
                  f"from {len(result.runs)} archived run(s)")
    if args.html:
        _write_html(results, dirs, named=bool(args.notebooks))
    checked = [results] if args.check_only or not args.notebooks else list(dirs.values())
    for folder in checked:
        check_no_machine_paths(folder)
    print(f"{', '.join(map(str, checked))}: names no path, host or user of this machine")
    return 0
