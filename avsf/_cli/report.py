"""avsf report: render tables again from results/ alone (the archived runs), and check results/."""

from __future__ import annotations

HELP = ("render notebook tables again from results/<nb>/ alone (its runs/ archive and provenance.json; "
        "no sweeps/ needed) and check that results/ names no path of this machine")


def add_arguments(p) -> None:
    p.add_argument("notebooks", nargs="*", metavar="NOTEBOOK",
                   help="experiment names (e.g. ablate_droppath); default: every table under --results")
    p.add_argument("--results", default="results", metavar="DIR", help="the results folder (default: results)")
    p.add_argument("--scale", default="smoke", help="smoke (results/<nb>/), small or paper (results/<nb>/<scale>/)")
    p.add_argument("--check-only", action="store_true",
                   help="render nothing; only check that the results folder names no machine path")


def _table_dirs(results, names: list[str], scale: str):
    from avsf.report.archive import PROVENANCE_FILE
    from avsf.errors import UserError
    from avsf.experiments import get_experiment, list_experiments

    for name in names:
        get_experiment(name)  # unknown names list the known ones
    chosen = names or list_experiments()
    dirs = [results / n if scale == "smoke" else results / n / scale for n in chosen]
    missing = [d for d in dirs if not (d / PROVENANCE_FILE).is_file()]
    if names and missing:
        raise UserError(f"no rendered table with a provenance.json at {', '.join(map(str, missing))}; run the "
                        f"notebook once (with its sweep) to archive its runs")
    return [d for d in dirs if d not in missing]


def run(args) -> int:
    from pathlib import Path

    from avsf.report.archive import check_no_machine_paths, render_from_archive
    from avsf.errors import UserError

    results = Path(args.results)
    if not results.is_dir():
        raise UserError(f"--results {results}: no such folder")
    if not args.check_only:
        dirs = _table_dirs(results, list(args.notebooks), args.scale)
        if not dirs:
            raise UserError(f"no table under {results} has a provenance.json yet; run the notebooks once "
                            f"(with their sweeps) to archive their runs")
        for out in dirs:
            result = render_from_archive(out)
            print(f"{out}: table.md, table.csv, rows.csv, runs.csv and {len(result.figures)} figure(s) "
                  f"from {len(result.runs)} archived run(s)")
    checked = [results] if args.check_only or not args.notebooks else dirs
    for folder in checked:
        check_no_machine_paths(folder)
    print(f"{', '.join(map(str, checked))}: names no path, host or user of this machine")
    return 0
