"""avsf check-data: scan a dataset for missing, broken and silent files."""

from __future__ import annotations

import json

HELP = "scan a dataset: missing, unreadable, truncated, zero-length, video-less, audio-less files and bad label lines"


def add_arguments(p) -> None:
    from avsf.data.datasets import READERS

    p.add_argument("--dataset", default="kinetics", choices=sorted(READERS), help="dataset format")
    p.add_argument("--root", required=True, help="dataset root (split-file paths are relative to it)")
    p.add_argument("--csv", default=None, help="split file to scan (Kinetics, EPIC, Charades formats)")
    p.add_argument("--split", default="train", choices=["train", "val", "test"],
                   help="without --csv: the split to read from --split-dir in the dataset's format")
    p.add_argument("--split-dir", default=None, help="folder with the split files (default: --root)")
    p.add_argument("--workers", type=int, default=2, help="prober processes")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds one file may take before it counts as a hang")
    p.add_argument("--json", action="store_true", help="print the JSON summary only")


def run(args) -> int:
    from avsf.data.check import format_scan, scan_dataset

    report = scan_dataset(dataset=args.dataset, root=args.root, split_file=args.csv, split=args.split,
                          split_dir=args.split_dir, workers=args.workers, timeout_s=args.timeout)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(format_scan(report))
        print()
        print(json.dumps({"listed": report.listed, "ok": report.ok, "counts": report.counts()}))
    return 0
