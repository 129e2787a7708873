"""avsf train: train a preset (resuming from the newest valid checkpoint), then test it."""

from __future__ import annotations

import json
from pathlib import Path

HELP = "train a preset in a run directory (reruns resume), then run the multi-view test"


def add_arguments(p) -> None:
    p.add_argument("--preset", required=True, help="preset name (`avsf presets` lists them)")
    p.add_argument("--data", default=None, metavar="DIR",
                   help="dataset root in Kinetics format (train.csv, val.csv, test.csv), or for AVA presets "
                        "an AVA root (videos/, annotations/); "
                        "default: the preset's dataset (the built-in synthetic one is generated on first use)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory (config, checkpoints, metrics)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set solver.epochs=4 (repeatable)")
    p.add_argument("--seed", type=int, default=None, help="shorthand for --set seed=N")
    p.add_argument("--fresh", action="store_true",
                   help="delete what RUN_DIR holds (checkpoints, metrics, final.json) and start anew")
    p.add_argument("--json", action="store_true", help="print final.json instead of a summary")


def build_config(args):
    """The run config from --preset, --data, --seed and --set (errors name what to fix)."""
    from avsf.errors import UserError
    from avsf.presets import get_preset

    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    if args.data is not None:
        root = Path(args.data)
        if not root.is_dir():
            raise UserError(f"--data {root}: no such directory; give a dataset root holding train.csv")
        if get_preset(args.preset).data.dataset == "ava":  # AVA: videos/ and annotations/ (datasets/ava.py)
            if not (root / "annotations").is_dir() and not any(o.startswith("data.ava_annotation_dir=") for o in overrides):
                raise UserError(f"--data {root}: no annotations/ folder there; an AVA root holds videos/ and "
                                f"annotations/ (box CSVs, label map), or set data.ava_annotation_dir")
        elif not (root / "train.csv").is_file():
            raise UserError(f"--data {root}: no train.csv there; a dataset root holds train.csv, val.csv and "
                            f"test.csv (`avsf synth` writes one)")
        overrides.append(f"data.root={root.resolve()}")
    return get_preset(args.preset).with_overrides(overrides)


def run(args) -> int:
    from avsf.engine.train import train

    cfg = build_config(args)
    result = train(cfg, args.out, fresh=args.fresh)
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    elif result.get("status") == "stopped":
        print(f"stopped at epoch {result['epoch']} step {result['step']}; rerun the same command to resume")
    else:
        print(format_summary(result, run_dir=args.out))
    return 0


def format_summary(final: dict, *, run_dir: str) -> str:
    keys = [k for k in ("top1", "top5", "map", "verb_top1", "noun_top1", "action_top1") if k in final]
    nums = ", ".join(f"{k} {final[k]:.2f}" for k in keys)
    cost = f"{final.get('params', 0) / 1e6:.2f} M params, {final.get('gflops_x_views', '?')} GFLOPs"
    return f"{final.get('name')} (seed {final.get('seed')}): {nums}; {cost}; {run_dir}/final.json"
