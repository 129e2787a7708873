"""avsf verify-results: rerun the runs behind a committed table and compare them with its archive."""

from __future__ import annotations

import json

HELP = ("rerun the runs behind results/<nb>/ (from its stored settings, as a fresh clone would) and compare "
        "their final.json and metrics.jsonl with the archived raw runs: identical on a machine with the same "
        "fingerprint; elsewhere each difference beside its row's spread over seeds")


def add_arguments(p) -> None:
    p.add_argument("notebook", help="the table's experiment name (e.g. ablate_droppath)")
    p.add_argument("--results", default="results", metavar="DIR", help="the results folder (default: results)")
    p.add_argument("--scale", default="smoke", help="smoke (results/<nb>/), small or paper (results/<nb>/<scale>/)")
    p.add_argument("--sweep-dir", default=None, metavar="DIR",
                   help="where the reruns go (default: sweeps/verify/<nb> of this checkout; finished reruns there "
                        "are reused, so an interrupted check resumes)")
    p.add_argument("--fresh", action="store_true", help="empty --sweep-dir first")
    p.add_argument("--rows", default=None, metavar="ROW[,ROW]", help="rerun only these rows (default: all)")
    p.add_argument("--seeds", default=None, metavar="S[,S]", help="rerun only these seeds (default: all)")
    p.add_argument("--backend", choices=("debug", "local", "slurm"), default="local")
    p.add_argument("--cluster", default=None, help="cluster profile for --backend slurm")
    p.add_argument("--max-parallel", type=int, default=None, help="runs at once (default: as the notebooks, 2)")
    p.add_argument("--data-root", action="append", default=[], metavar="DATASET=PATH",
                   help="where a dataset lives, as for `avsf sweep` (the built-in data needs none)")
    p.add_argument("--json", action="store_true", help="print the verdict as JSON")


def run(args) -> int:
    from pathlib import Path

    from avsf._cli.sweep import parse_data_roots
    from avsf.errors import UserError
    from avsf.experiments import get_experiment
    from avsf.report.verify import verify_table

    get_experiment(args.notebook)  # an unknown name lists the known ones
    table = Path(args.results) / args.notebook
    table = table if args.scale == "smoke" else table / args.scale
    try:
        seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
    except ValueError:
        raise UserError(f"--seeds {args.seeds!r} must be comma-separated integers, e.g. 0,1") from None
    result = verify_table(table, sweep_dir=args.sweep_dir, backend=args.backend, cluster=args.cluster,
                          max_parallel=args.max_parallel, rows=args.rows.split(",") if args.rows else None,
                          seeds=seeds, data_roots=parse_data_roots(args.data_root), fresh=args.fresh)
    if args.json:
        print(json.dumps(result.to_dict(), indent=1))
    else:
        for check in result.checks:
            print(check.line())
        for name in result.not_built:
            print(f"{name}: committed, but this code builds no such run (its recipe or config changed)")
        print(result.summary())
        if any(not c.identical and not c.same_machine for c in result.checks):
            print("The committed runs' machine is in their final.json (`environment`). An x86 CPU of a higher "
                  "dispatch level can run a lower one's kernels: ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 "
                  "MKL_ENABLE_INSTRUCTIONS=AVX2 (README, 'Same config, same numbers').")
    return 1 if result.failed else 0
