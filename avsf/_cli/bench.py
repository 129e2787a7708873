"""avsf bench: speed and memory benchmarks (model, data)."""

from __future__ import annotations

import json

HELP = ("benchmarks: `avsf bench model --preset NAME`, `avsf bench model --compare` (the speed targets), "
        "`avsf bench data --root DIR`, `avsf bench recipe --out DIR`, `avsf bench gpu` (one GPU node)")


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="what", metavar="WHAT", required=True)
    m = sub.add_parser("model", help="forward+backward clips/s and peak memory of a preset on this machine; "
                                     "--compare: the speed targets against SlowFast tiny and pytorchvideo")
    m.add_argument("--preset", help="preset name (avsf presets lists them); not with --compare")
    m.add_argument("--batch", type=int, default=None, help="clips per step (default 8; --compare: the tiny batch, 32)")
    m.add_argument("--crop", type=int, default=None, help="spatial crop (default: the preset's train crop)")
    m.add_argument("--iters", type=int, default=5, help="timed iterations (after one warm-up)")
    m.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    m.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU)")
    m.add_argument("--profile", action="store_true", help="also print the top ops and stages by time")
    m.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's own; --compare: 2, the targets' setting)")
    m.add_argument("--json", action="store_true", help="print one JSON object")
    c = m.add_argument_group("--compare: AVSlowFast tiny vs SlowFast tiny, and the R50 8x8 step vs pytorchvideo 0.1.5's")
    c.add_argument("--compare", action="store_true",
                   help="time the speed targets' contenders in one process, steps alternated round by round")
    c.add_argument("--rounds", type=int, default=9, help="timed rounds of the tiny pair")
    c.add_argument("--r50-rounds", type=int, default=5, help="timed rounds of the R50 contenders")
    c.add_argument("--r50-batch", type=int, default=2, help="R50 clips per step")
    c.add_argument("--r50-crop", type=int, default=128, help="R50 crop (a multiple of 32)")
    c.add_argument("--no-pytorchvideo", action="store_true",
                   help="skip the pytorchvideo contender (an optional extra: pip install -e '.[bench]')")
    d = sub.add_parser("data", help="training clips/s of the loader with 1 and N workers, beside a bare PyAV loop")
    d.add_argument("--root", required=True, help="dataset root with train.csv (e.g. data/synthetic/smoke)")
    d.add_argument("--preset", default="avslowfast_tiny", help="preset whose sampling and sizes to use")
    d.add_argument("--workers", type=int, default=2, help="N for the multi-worker measurement")
    d.add_argument("--clips", type=int, default=64, help="clips per measurement")
    d.add_argument("--json", action="store_true", help="print one JSON object")
    g = sub.add_parser("gpu", help="the GPU path on one GPU node in one JSON (bf16 step and MFU, torch.compile, "
                                   "DDP with NCCL, the loader vs the GPU's appetite, 200 small-scale steps)")
    g.add_argument("--peak-tflops", type=float, default=None,
                   help="the card's dense bf16 peak, TFLOP/s (default: looked up from the device name)")
    g.add_argument("--synthetic-root", default=None,
                   help="where the small built-in data is or goes (default: a temporary folder)")
    g.add_argument("--work-dir", default=None, help="parent of the temporary run folder (default: the system's)")
    g.add_argument("--out", default=None, help="also write the JSON to this file")
    g.add_argument("--dry-run-cpu", action="store_true",
                   help="run the checks' code on the CPU with the tiny presets and a few steps (no GPU needed; "
                        "for testing the command itself)")
    r = sub.add_parser("recipe", help="train the tiny presets as they are and check the smoke recipe's criteria "
                                      "(fit, AV beats each modality, Fig. 3's premise, data wait)")
    r.add_argument("--out", required=True, help="folder for the runs (finished runs are reused)")
    r.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds per preset")
    r.add_argument("--synthetic-root", default=None, help="where the built-in data is (default: the preset's)")
    r.add_argument("--no-probes", action="store_true", help="skip the linear probes on fixed features")
    r.add_argument("--parallel", type=int, default=2, help="runs trained at once (local launcher; default 2)")
    r.add_argument("--json", action="store_true", help="print one JSON object")


def run(args) -> int:
    from avsf.errors import UserError

    if args.what == "model" and args.compare:
        from avsf.models.bench import compare_speed, format_comparison as format_report

        if args.preset or args.device != "cpu" or args.bf16 or args.profile:
            raise UserError("--compare runs fixed presets on the CPU in fp32: drop --preset, --device, --bf16 and "
                            "--profile (or drop --compare to bench one preset)")
        result = compare_speed(threads=args.threads or 2, tiny_batch=args.batch or 32, r50_batch=args.r50_batch,
                               r50_crop=args.r50_crop, rounds=args.rounds, r50_rounds=args.r50_rounds,
                               pytorchvideo=not args.no_pytorchvideo)
    elif args.what == "model":
        from avsf.models.bench import bench_model, format_report

        if not args.preset:
            raise UserError("avsf bench model needs --preset NAME (avsf presets lists them), or --compare")
        result = bench_model(preset=args.preset, batch=args.batch or 8, crop=args.crop, iters=args.iters,
                             device=args.device, bf16=args.bf16, profile=args.profile, threads=args.threads)
    elif args.what == "gpu":
        from avsf.engine.gpu_check import gpu_check
        from avsf.engine.io import atomic_write_json

        result = gpu_check(device="cpu" if args.dry_run_cpu else "cuda", peak_tflops=args.peak_tflops,
                           work_dir=args.work_dir, synthetic_root=args.synthetic_root)
        if args.out:
            atomic_write_json(args.out, result)
        print(json.dumps(result, indent=2))
        return 0 if result["all_ok"] else 1
    elif args.what == "recipe":
        from avsf.engine.recipe_check import bench_recipe, format_report

        result = bench_recipe(out=args.out, seeds=tuple(args.seeds), synthetic_root=args.synthetic_root,
                              probes=not args.no_probes, max_parallel=args.parallel)
        print(json.dumps(result, indent=2) if args.json else format_report(result))
        return 0 if result["all_ok"] else 1
    else:
        from avsf.data.bench import bench_data, format_report

        result = bench_data(root=args.root, preset=args.preset, workers=args.workers, clips=args.clips)
    print(json.dumps(result, indent=2) if args.json else format_report(result))
    return 0
