"""avsf test: multi-view test of a run directory's newest valid checkpoint."""

from __future__ import annotations

import json

HELP = "multi-view test of a trained run directory; writes RUN_DIR/final.json"


def add_arguments(p) -> None:
    p.add_argument("--run", required=True, metavar="RUN_DIR", help="a run directory written by `avsf train`")
    p.add_argument("--json", action="store_true", help="print final.json instead of a summary")


def run(args) -> int:
    from avsf._cli.train import format_summary
    from avsf.engine.evaluate import evaluate

    final = evaluate(args.run)
    print(json.dumps(final, indent=2, sort_keys=True) if args.json else format_summary(final, run_dir=args.run))
    return 0
