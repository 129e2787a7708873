"""Scan a whole dataset for bad files (``avsf check-data``): every listed file is deep-probed
in guarded subprocesses (:mod:`avsf.data.probe`) and every problem is reported, the scan
never stops at the first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from avsf.data.datasets import list_split_file
from avsf.data.datasets.records import records_paths
from avsf.data.probe import PROBLEMS, GuardedProber


# --- dataset scan (avsf check-data) -----------------------------------------------------
@dataclass
class ScanReport:
    """What `avsf check-data` found."""

    dataset: str
    root: str
    split_file: str
    listed: int = 0
    bad_lines: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, list[dict[str, str]]] = field(default_factory=lambda: {k: [] for k in PROBLEMS})
    ok: int = 0
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        c = {k: len(v) for k, v in self.files.items()}
        c["bad_label_lines"] = len(self.bad_lines)
        return c

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "root": self.root, "split_file": self.split_file,
                "listed": self.listed, "ok": self.ok, "counts": self.counts(),
                "bad_label_lines": self.bad_lines, "files": self.files, "seconds": round(self.seconds, 3)}


def scan_dataset(*, dataset: str, root: str, split_file: str | None, split: str = "train",
                 split_dir: str | None = None, workers: int = 1, timeout_s: float = 60.0) -> ScanReport:
    """Read a split file in `dataset`'s format (or the split `split` of `split_dir`) and
    deep-probe every listed file, reporting every problem (never stopping at the first)."""
    start = time.monotonic()
    entries, bad_lines = list_split_file(dataset=dataset, root=root, split_file=split_file, split=split,
                                         split_dir=split_dir)
    report = ScanReport(dataset=dataset, root=str(root), split_file=str(split_file or f"{split_dir or root} ({split})"))
    report.listed = len(entries) + len(bad_lines)
    report.bad_lines = [{"line": b.line_no, "text": b.text, "reason": b.reason} for b in bad_lines]
    paths = sorted(set(records_paths(entries)))
    with GuardedProber(workers=workers, timeout_s=timeout_s) as prober:
        for result in prober.probe(paths, deep=True):
            problems = result.problems()
            for problem in problems:
                report.files[problem].append({"path": result.path, "reason": result.reason_for(problem)})
            if not problems:
                report.ok += 1
    for items in report.files.values():
        items.sort(key=lambda d: d["path"])
    report.seconds = time.monotonic() - start
    return report


def format_scan(report: ScanReport) -> str:
    """A human-readable table: one row per problem category, then every offending file."""
    counts = report.counts()
    lines = [f"{report.dataset} {report.split_file}: {report.listed} listed lines, {report.ok} good files "
             f"({report.seconds:.1f} s)", "", f"{'problem':<16} {'count':>6}"]
    for k in ("bad_label_lines",) + PROBLEMS:
        lines.append(f"{k:<16} {counts[k]:>6}")
    if report.bad_lines:
        lines += ["", "label lines that do not parse:"]
        lines += [f"  line {b['line']}: {b['text']!r}: {b['reason']}" for b in report.bad_lines]
    for k in PROBLEMS:
        if report.files[k]:
            lines += ["", f"{k}:"]
            lines += [f"  {d['path']}: {d['reason']}" for d in report.files[k]]
    return "\n".join(lines)
