"""avsf synth: write the built-in audiovisual dataset (mp4 + Kinetics-format csv files)."""

from __future__ import annotations

import json

HELP = ("generate the built-in synthetic audiovisual dataset: `avsf synth --out DIR --scale smoke|small [--seed N]`; "
        "`--verify` checks a folder against the checksums shipped with avsf, `--write-checksums` rewrites them")


def add_arguments(p) -> None:
    p.add_argument("--out", required=True, help="folder to create (train/val/test.csv, classnames.json, manifest.json, mp4s)")
    p.add_argument("--scale", default="smoke", help="smoke (20 classes, 64x64, 2,200 clips: 800 train, 400 val, 1,000 test) or small (20 classes, 160x128, 3,200 clips)")
    p.add_argument("--seed", type=int, default=0, help="content seed: the same seed gives the same files")
    p.add_argument("--workers", type=int, default=None, help="processes that encode clips (default: up to 2)")
    p.add_argument("--force", action="store_true", help="replace an existing folder at --out")
    p.add_argument("--kind", choices=("kinetics", "ava"), default="kinetics",
                   help="for --verify / --write-checksums: the classification data (default) or the AVA-format one")
    p.add_argument("--verify", action="store_true",
                   help="compare the files at --out with the per-file checksums shipped with avsf and exit")
    p.add_argument("--write-checksums", action="store_true",
                   help="maintainers: generate a fresh dataset at --out (unverified) and record its per-file sha256 "
                        "as the shipped reference (avsf/resources/synthetic_checksums.json) for --scale/--seed")
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
    if args.verify:
        return _verify(out, kind=args.kind, scale=args.scale, seed=args.seed)
    if args.write_checksums:
        return _write_checksums(out, kind=args.kind, scale=args.scale, seed=args.seed, workers=args.workers,
                                force=args.force)
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


def _kind(kind: str, scale: str):
    """(generator module, spec) of one kind of built-in data."""
    from avsf.data.synthetic import dataset, detection
    from avsf.errors import UserError

    if kind == "ava":
        if scale not in detection.SCALES:
            raise UserError(f"unknown synthetic scale {scale!r} for the AVA data; choose one of {', '.join(detection.SCALES)}")
        return detection, detection.SCALES[scale]
    return dataset, dataset.scale_spec(scale)


def _key(kind: str, scale: str, seed: int) -> str:
    return f"{'ava-' if kind == 'ava' else ''}{scale}-seed{seed}"


def _verify(out, *, kind: str, scale: str, seed: int) -> int:
    from dataclasses import asdict

    from avsf.data.synthetic import checksums, read_manifest
    from avsf.errors import UserError

    module, spec = _kind(kind, scale)
    m = read_manifest(out)
    if not m or m.get("scale") != scale or m.get("seed") != seed or (m.get("kind") == "ava") != (kind == "ava"):
        raise UserError(f"{out} does not hold the {kind} {scale} dataset for seed {seed} (no matching manifest.json); "
                        f"pass the --kind, --scale and --seed it was generated with")
    if m["generator_version"] != module.GENERATOR_VERSION:
        print(f"note: {out} was made by generator version {m['generator_version']}; this avsf writes "
              f"{module.GENERATOR_VERSION}")
    result = checksums.check(out, key=_key(kind, scale, seed), generator_version=m["generator_version"], spec=asdict(spec))
    if result.status == "mismatch":
        raise UserError(f"{out}: {result.summary()}; regenerate it: avsf synth --out {out} --scale {scale} "
                        f"--seed {seed} --force (or delete it: it is generated on first use)")
    print(f"{out}: {result.status} (digest {result.digest})" + (f": {result.reason}" if result.reason else ""))
    return 0


def _write_checksums(out, *, kind: str, scale: str, seed: int, workers: int | None, force: bool) -> int:
    from dataclasses import asdict

    from avsf.data.synthetic import checksums, read_manifest
    from avsf.errors import UserError

    module, spec = _kind(kind, scale)
    if out.exists() and any(out.iterdir()):
        earlier = read_manifest(out) or {}
        if not force or ("generator_version" not in earlier):
            raise UserError(f"{out} is not empty; --write-checksums generates a fresh dataset: pick a new folder, or "
                            f"pass --force to replace an earlier synthetic dataset there")
    if kind == "ava":
        module.generate(out, spec=spec, seed=seed, verify=False)
    else:
        module.generate_dataset(out, spec=spec, seed=seed, workers=workers, overwrite=True, verify=False)
    key = _key(kind, scale, seed)
    entry = checksums.record(out, key=key, generator_version=module.GENERATOR_VERSION, spec=asdict(spec))
    print(f"{checksums.REFERENCE}: {key} = {len(entry['files'])} files, digest {entry['digest']}")
    return 0
