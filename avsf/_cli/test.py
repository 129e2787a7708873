"""avsf test: multi-view test of a run directory's newest valid checkpoint."""

from __future__ import annotations

import json

HELP = "multi-view test of a trained run directory; writes RUN_DIR/final.json"


def add_arguments(p) -> None:
    # positional: torchrun's own parser takes `--run` as an abbreviation of its --run-path
    p.add_argument("run_dir", nargs="?", metavar="RUN_DIR", help="a run directory written by `avsf train`")
    p.add_argument("--run", dest="run_flag", metavar="RUN_DIR",
                   help="the same, as a flag (not under torchrun, which swallows --run)")
    p.add_argument("--json", action="store_true", help="print final.json instead of a summary")


def run(args) -> int:
    from avsf._cli.train import format_summary
    from avsf.engine.evaluate import evaluate
    from avsf.errors import UserError

    if (args.run_dir is None) == (args.run_flag is None):
        raise UserError("avsf test takes one run directory: `avsf test RUN_DIR` (under torchrun: "
                        "`torchrun ... -m avsf test RUN_DIR`)")
    run_dir = args.run_dir or args.run_flag
    final = evaluate(run_dir)
    print(json.dumps(final, indent=2, sort_keys=True) if args.json else format_summary(final, run_dir=run_dir))
    return 0
