"""avsf sweep: run a named experiment's grid (one run per table cell and seed) through the grid
runner (:mod:`avsf.grid`), the same door the notebooks use."""

from __future__ import annotations

import sys

HELP = "submit a named experiment (a paper table's grid of runs) to debug, local or slurm"


def add_arguments(p) -> None:
    from avsf.grid import DEFAULT_MAX_PARALLEL, DEFAULT_SEEDS

    seeds = ",".join(map(str, DEFAULT_SEEDS))
    p.add_argument("name", help="experiment name (avsf.experiments.list_experiments(), e.g. table3_kinetics)")
    p.add_argument("--backend", choices=("debug", "local", "slurm"), default="local",
                   help="debug: in this process; local: processes on this machine; slurm: a cluster")
    p.add_argument("--cluster", default="local",
                   help="cluster profile: a name in slurm/ (local, gpu_cluster.example) or a YAML path")
    p.add_argument("--scale", choices=("smoke", "small", "paper"), default="smoke",
                   help="smoke: tiny CPU runs; small: real widths, short; paper: the paper's recipe")
    p.add_argument("--out", required=True, help="sweep directory (one sub-directory per run)")
    p.add_argument("--seeds", default=seeds,
                   help=f"comma-separated seeds (default {seeds}, as the notebooks: the fewest for a verdict)")
    p.add_argument("--rows", default=None, metavar="ROW[,ROW]",
                   help="only these rows (cells) of the table, plus the rows they start from (init_from) "
                        "and an ensemble's members; finished runs are reused, not trained again")
    p.add_argument("--max-parallel", type=int, default=DEFAULT_MAX_PARALLEL,
                   help=f"runs training at once: processes (local) or each job array's cap (slurm) "
                        f"(default {DEFAULT_MAX_PARALLEL}, as the notebooks)")
    p.add_argument("--retry-failed", action="store_true",
                   help="submit failed runs again (each at most --max-attempts failed attempts in all)")
    p.add_argument("--max-attempts", type=int, default=None, metavar="N",
                   help="failed attempts after which a run is given up, not submitted again (default: the "
                        "cluster profile's max_attempts, 3); preemptions do not count")
    p.add_argument("--allow-other-version", action="store_true",
                   help="resume unfinished runs that another avsf version submitted to --out (refused otherwise)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override for every run, applied before the runs are hashed and linked "
                        "(init_from), e.g. --set solver.epochs=1 (repeatable)")
    p.add_argument("--data-root", action="append", default=[], metavar="DATASET=PATH",
                   help="where a dataset lives, e.g. --data-root kinetics=/data/k400 (repeatable)")
    p.add_argument("--job-fn", default="avsf.engine.train:train",
                   help="the function each job runs (module:function or file.py:function)")
    p.add_argument("--dry-run", action="store_true",
                   help="list the runs (in submission order) and their directories; submit nothing")
    p.add_argument("--wait", action="store_true",
                   help="wait until every run is done or failed, printing progress; exit 1 if any failed "
                        "(the debug backend always waits)")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="with --wait: give up after this long (default: no limit)")


def parse_data_roots(items: list[str]) -> dict[str, str] | None:
    from avsf.errors import UserError

    roots = {}
    for item in items:
        if "=" not in item:
            raise UserError(f"--data-root {item!r} must be DATASET=PATH, e.g. kinetics=/data/k400")
        key, path = item.split("=", 1)
        roots[key.strip()] = path
    return roots or None


def run(args) -> int:
    from avsf import launch
    from avsf.grid import build_grid, run_grid

    profile = launch.load_cluster(args.cluster)  # a bad profile fails before anything is built
    grid = build_grid(args.name, scale=args.scale, seeds=args.seeds, data_roots=parse_data_roots(args.data_root),
                      overrides=args.overrides, rows=args.rows.split(",") if args.rows is not None else None)
    if not grid.runs:
        print(f"avsf sweep: {args.name} has no runs at scale {args.scale}", file=sys.stderr)
        return 0
    if args.dry_run:
        for level in grid.levels():
            for r in level:
                after = f"  (after {', '.join(r.after)})" if r.after else ""
                print(f"{launch.run_dir_for(r.config, args.out)}{after}")
        return 0
    wait = args.wait or args.backend == "debug"
    try:
        outcome = run_grid(grid, backend=args.backend, sweep_dir=args.out, cluster=profile,
                           max_parallel=args.max_parallel, retry_failed=args.retry_failed, job_fn=args.job_fn,
                           wait=wait, timeout_s=args.timeout, label=f"avsf sweep {args.name}",
                           max_attempts=args.max_attempts, allow_other_version=args.allow_other_version)
    except TimeoutError as e:
        print(f"avsf sweep {args.name}: {e} (they go on; `avsf status {args.out}` follows them)", file=sys.stderr)
        return 1
    print(f"avsf sweep {args.name}: {outcome.summary()} ({outcome.sweep_dir})", file=sys.stderr)
    if outcome.failures:
        print(f"avsf sweep {args.name}: {len(outcome.failures)} of {len(grid.runs)} run(s) failed "
              f"(`avsf status {args.out}` shows their logs; --retry-failed submits them again):", file=sys.stderr)
        for line in outcome.failure_lines():
            print(f"  {line}", file=sys.stderr)
        return 1
    return 0
