"""avsf flops: parameters and GFLOPs of a preset in the fvcore convention."""

from __future__ import annotations

import json

HELP = "parameters and GFLOPs per view of a preset (fvcore convention: one multiply-add = one flop)"


def add_arguments(p) -> None:
    p.add_argument("--preset", required=True, help="preset name (avsf presets lists them)")
    p.add_argument("--crop", type=int, default=256, help="spatial crop of the view (default 256, the test crop)")
    p.add_argument("--width", type=int, default=None,
                   help="frame width when not square (the paper counts AVA detectors at --crop 256 --width 320)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. --set model.audio_beta=0.25 (repeatable)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args) -> int:
    from avsf.errors import UserError
    from avsf.flops import count_model
    from avsf.presets import get_preset

    if args.crop < 32:
        raise UserError(f"--crop {args.crop}: the crop must be at least 32 pixels (five stride-2 stages)")
    cfg = get_preset(args.preset)
    if args.overrides:
        cfg = cfg.with_overrides(args.overrides)
    if cfg.model.num_classes <= 0:
        if cfg.data.dataset != "synthetic":
            raise UserError(f"{args.preset} takes its class count from the dataset: give it with "
                            f"--set model.num_classes=N")
        from avsf.data.synthetic import CLASSES  # the built-in dataset decides: count its classes

        cfg = cfg.with_overrides([f"model.num_classes={len(CLASSES)}"])
    result = {"preset": args.preset, **count_model(cfg.model, args.crop, width=args.width)}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    share = 100 * result["gflops_audio"] / result["gflops"] if result["gflops"] else 0.0
    print(f"{args.preset} at {args.crop}x{args.width or args.crop}: {result['params'] / 1e6:.2f} M params, "
          f"{result['gflops']:.2f} GFLOPs per view (audio pathway and laterals {result['gflops_audio']:.2f}, "
          f"{share:.1f} %)")
    print("  by op: " + ", ".join(f"{k} {v:.3f}" for k, v in result["gflops_by_op"].items()))
    return 0
