"""avsf status: the runs of a sweep directory, their state, job ids, metrics and errors."""

from __future__ import annotations

import json

HELP = "show a sweep's runs: state, job id, the config fields it varies, metrics, errors"
# final.json numbers worth a column in the text table (--json has them all)
HEADLINE_METRICS = ("top1", "top5", "map", "verb_top1", "noun_top1", "action_top1", "params", "gflops")


def add_arguments(p) -> None:
    p.add_argument("sweep_dir", help="the --out directory of `avsf sweep` (or of launch.submit)")
    p.add_argument("--json", action="store_true", help="one JSON object per run (all config fields)")
    p.add_argument("--state", choices=("pending", "running", "done", "failed"), help="only runs in this state")


def print_table(frame) -> None:
    """The runs as a text table, then the error tail of each failed run."""
    from avsf.launch import varying_config_columns

    if not len(frame):
        print("no runs")
        return
    metrics = [f"metric.{m}" for m in HEADLINE_METRICS if f"metric.{m}" in frame.columns]
    cols = ["run", "state", "job_id", "attempts"] + varying_config_columns(frame) + metrics
    table = frame[cols].rename(columns={c: c.removeprefix("metric.") for c in metrics})
    print(table.to_string(index=False))
    counts = frame["state"].value_counts()
    print("\n" + ", ".join(f"{n} {s}" for s, n in counts.items()))
    for _, row in frame[frame["state"] == "failed"].iterrows():
        reason = f": {row['reason']}" if row.get("reason") else ""
        print(f"\n--- {row['run']} failed (job {row['job_id']}){reason}; resubmit with --retry-failed\n{row['error']}")


def run(args) -> int:
    from avsf.launch import status

    frame = status(args.sweep_dir)
    if args.state and len(frame):
        frame = frame[frame["state"] == args.state]
    if args.json:
        print(json.dumps(json.loads(frame.to_json(orient="records")), indent=2))
        return 0
    print_table(frame)
    return 0
