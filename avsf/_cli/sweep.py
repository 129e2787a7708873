"""avsf sweep: submit a named experiment's grid of runs (one per table cell and seed)."""

from __future__ import annotations

import sys

HELP = "submit a named experiment (a paper table's grid of runs) to debug, local or slurm"


def add_arguments(p) -> None:
    p.add_argument("name", help="experiment name (avsf.experiments.list_experiments(), e.g. table3_kinetics)")
    p.add_argument("--backend", choices=("debug", "local", "slurm"), default="local",
                   help="debug: in this process; local: processes on this machine; slurm: a cluster")
    p.add_argument("--cluster", default="local",
                   help="cluster profile: a name in slurm/ (local, gpu_cluster.example) or a YAML path")
    p.add_argument("--scale", choices=("smoke", "small", "paper"), default="smoke",
                   help="smoke: tiny CPU runs; small: real widths, short; paper: the paper's recipe")
    p.add_argument("--out", required=True, help="sweep directory (one sub-directory per run)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1,2")
    p.add_argument("--max-parallel", type=int, default=None,
                   help="runs training at once (default: the profile's array_parallelism on slurm, 1 locally)")
    p.add_argument("--retry-failed", action="store_true", help="submit failed runs again")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override applied to every run, e.g. --set device=cuda (repeatable)")
    p.add_argument("--data-root", action="append", default=[], metavar="DATASET=PATH",
                   help="where a dataset lives, e.g. --data-root kinetics=/data/k400 (repeatable)")
    p.add_argument("--job-fn", default="avsf.engine.train:train",
                   help="the function each job runs (module:function or file.py:function)")
    p.add_argument("--dry-run", action="store_true", help="list the runs and their directories; submit nothing")
    p.add_argument("--wait", action="store_true", help="wait until every run is done or failed, then print status")


def _data_roots(items: list[str]) -> dict[str, str] | None:
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
    from avsf.experiments import check_seeds, get_grid

    profile = launch.load_cluster(args.cluster)  # a bad profile fails before anything is built
    configs = get_grid(args.name, scale=args.scale, seeds=check_seeds(args.seeds),
                       data_roots=_data_roots(args.data_root))
    if args.overrides:
        configs = [cfg.with_overrides(args.overrides) for cfg in configs]
    if not configs:
        print(f"avsf sweep: {args.name} has no runs at scale {args.scale}", file=sys.stderr)
        return 0
    if args.dry_run:
        for cfg in configs:
            print(launch.run_dir_for(cfg, args.out))
        return 0
    report = launch.submit(configs, backend=args.backend, sweep_dir=args.out, cluster=profile,
                           max_parallel=args.max_parallel, retry_failed=args.retry_failed, job_fn=args.job_fn)
    if args.wait:
        frame = launch.wait(args.out)
        from avsf._cli.status import print_table

        print_table(frame)
        return 1 if (frame["state"] == "failed").any() else 0
    return 1 if report.failed and not args.retry_failed else 0
