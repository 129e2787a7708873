"""avsf test: multi-view test of a run directory's newest valid checkpoint, or of a model file
(an `avsf convert` output) with a preset's data and views."""

from __future__ import annotations

import argparse
import json

HELP = ("multi-view test of a trained run directory (writes RUN_DIR/final.json), or of a model file: "
        "`avsf test --checkpoint FILE --preset NAME --out DIR`")


def add_arguments(p) -> None:
    # positional: torchrun's own parser takes `--run` as an abbreviation of its --run-path
    p.add_argument("run_dir", nargs="?", metavar="RUN_DIR", help="a run directory written by `avsf train`")
    p.add_argument("--run", dest="run_flag", metavar="RUN_DIR",
                   help="the same, as a flag (not under torchrun, which swallows --run)")
    p.add_argument("--json", action="store_true", help="print final.json instead of a summary")
    f = p.add_argument_group("a model file instead of a run directory (e.g. an `avsf convert` output)")
    f.add_argument("--checkpoint", metavar="FILE", help="torch file whose 'model' entry is the preset's state dict")
    f.add_argument("--preset", help="the preset the weights are for (its data, views and model)")
    f.add_argument("--out", metavar="DIR", help="run directory to create for the test (config.json, final.json)")
    f.add_argument("--data", default=None, help="dataset root (as for avsf train; default: the preset's)")
    f.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value (repeatable)")
    f.add_argument("--seed", type=int, default=None, help=argparse.SUPPRESS)


def run(args) -> int:
    from avsf._cli.train import format_summary
    from avsf.engine.evaluate import evaluate
    from avsf.errors import UserError

    if args.checkpoint:
        from avsf._cli.train import build_config
        from avsf.engine.evaluate import evaluate_file

        if args.run_dir or args.run_flag or not (args.preset and args.out):
            raise UserError("avsf test --checkpoint FILE needs --preset NAME and --out DIR (and no RUN_DIR): "
                            "`avsf test --checkpoint converted.pt --preset slowfast_r50_4x16 --out runs/zoo_test`")
        run_dir = args.out
        final = evaluate_file(args.checkpoint, build_config(args), run_dir)
    else:
        if args.preset or args.out or args.data or args.overrides:
            raise UserError("--preset, --out, --data and --set go with --checkpoint FILE; a run directory's test "
                            "uses the config it was trained with")
        if (args.run_dir is None) == (args.run_flag is None):
            raise UserError("avsf test takes one run directory: `avsf test RUN_DIR` (under torchrun: "
                            "`torchrun ... -m avsf test RUN_DIR`), or a model file: `avsf test --checkpoint FILE "
                            "--preset NAME --out DIR`")
        run_dir = args.run_dir or args.run_flag
        final = evaluate(run_dir)
    print(json.dumps(final, indent=2, sort_keys=True) if args.json else format_summary(final, run_dir=run_dir))
    return 0
