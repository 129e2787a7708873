"""avsf synth: write the built-in audiovisual dataset (mp4 + Kinetics-format csv files)."""

from __future__ import annotations

import json

HELP = "generate the built-in synthetic audiovisual dataset: `avsf synth --out DIR --scale smoke|small [--seed N]`"


def add_arguments(p) -> None:
    p.add_argument("--out", required=True, help="folder to create (train/val/test.csv, classnames.json, manifest.json, mp4s)")
    p.add_argument("--scale", default="smoke", help="smoke (20 classes, 64x64, 640 clips) or small (20 classes, 160x128, 3,200 clips)")
    p.add_argument("--seed", type=int, default=0, help="content seed: the same seed gives the same files")
    p.add_argument("--workers", type=int, default=None, help="processes that encode clips (default: up to 2)")
    p.add_argument("--force", action="store_true", help="replace an existing folder at --out")
    p.add_argument("--probe", action="store_true",
                   help="then fit visual, audio and audio+visual linear probes and print their test top-1")


def run(args) -> int:
    from pathlib import Path

    from avsf.data.synthetic import generate_dataset, is_complete, read_manifest, scale_spec
    from avsf.errors import UserError

    spec = scale_spec(args.scale)
    if args.seed < 0:
        raise UserError(f"--seed {args.seed} must be a non-negative integer")
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers {args.workers} must be at least 1")
    out = Path(args.out)
    empty = out.is_dir() and not any(out.iterdir())
    if out.exists() and not args.force and not empty:
        if is_complete(out, scale=args.scale, seed=args.seed):
            print(f"{out}: already holds the {args.scale} dataset for seed {args.seed}; nothing to do")
        else:
            raise UserError(f"{out} already exists and is not the {args.scale} dataset for seed {args.seed}; "
                            f"pick a new folder or pass --force to replace it")
    else:
        generate_dataset(out, spec=spec, seed=args.seed, workers=args.workers, overwrite=args.force or empty)
        m = read_manifest(out)
        counts = ", ".join(f"{k} {v}" for k, v in m["counts"].items())
        print(f"{out}: {len(m['classes'])} classes; clips {counts}; {m['clips_with_audio']} with audio; "
              f"{m['generation_seconds']:.1f} s")
    if args.probe:
        from avsf.data.synthetic.probes import probe_dataset

        print(json.dumps(probe_dataset(out), indent=2))
    return 0
