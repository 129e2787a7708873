"""What code, libraries and machine made a table: a record for the head of every table.md.

:func:`collect_provenance` gives the git commit of the checkout (and whether its code differs
from it), the versions of Python, torch, torchvision, torchaudio and PyAV, and the machine:
CPU model, core count, GPU model(s) when CUDA is up (from :mod:`avsf.fingerprint`). Never a host name, user name or path, so
the record can be committed (``results/<nb>/provenance.json``) and the table rendered again
from it anywhere. :func:`provenance_markdown` is the line table.md shows.
"""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from avsf.fingerprint import UNKNOWN, cpu_model, gpu_models

PACKAGES = ("torch", "torchvision", "torchaudio", "av")  # distribution names (PyAV is "av")
# changes there are the outputs of a notebook, not its code: a table rendered into a checkout
# whose only changes are results does not make the commit "dirty"
OUTPUT_DIRS = ("results",)


def git_state(repo: str | os.PathLike) -> dict[str, Any]:
    """``{"commit": sha or "unknown", "dirty": bool | None}``: ``dirty`` when tracked files
    outside results/ differ from the commit (None: not a git checkout, or git is missing)."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": UNKNOWN, "dirty": None}
    excludes = [f":(exclude){d}" for d in OUTPUT_DIRS]
    status = git("status", "--porcelain", "--untracked-files=no", "--", ".", *excludes)
    return {"commit": commit.strip(), "dirty": None if status is None else bool(status.strip())}


def package_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed version of each distribution ("not installed" when absent), plus python."""
    out = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def machine() -> dict[str, Any]:
    """CPU model, logical cores (and how many this process may use), OS and GPUs."""
    cores = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    return {"cpu": cpu_model(), "cores": cores, "usable_cores": usable,
            "os": f"{platform.system()} {platform.machine()}", "gpus": gpu_models()}


def collect_provenance(*, repo: str | os.PathLike | None = None, wall_time_s: float | None = None,
                       runs_wall_time_s: float | None = None) -> dict[str, Any]:
    """The record of one table (JSON-serialisable; no host names, user names or paths).

    Args:
        repo: the checkout (default: the one this package runs from).
        wall_time_s: how long the notebook took to make the table (submit, wait, build).
        runs_wall_time_s: the summed train + test time of the runs behind it (final.json).
    """
    repo = Path(repo) if repo is not None else Path(__file__).resolve().parents[2]  # avsf/report/ -> checkout
    return {**git_state(repo), "versions": package_versions(), "machine": machine(),
            "wall_time_s": None if wall_time_s is None else round(float(wall_time_s), 1),
            "runs_wall_time_s": None if runs_wall_time_s is None else round(float(runs_wall_time_s), 1)}


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    seconds = float(seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def provenance_markdown(record: dict[str, Any]) -> str:
    """One paragraph for table.md: commit, library versions, machine, wall times."""
    commit = str(record.get("commit", UNKNOWN))
    short = commit[:12] if commit != UNKNOWN else commit
    dirty = {True: " (with uncommitted changes)", False: "", None: ""}.get(record.get("dirty"), "")
    v = record.get("versions", {})
    versions = ", ".join(f"{k} {v[k]}" for k in ("python", *PACKAGES) if k in v)
    m = record.get("machine", {})
    gpus = m.get("gpus") or []
    gpu = f"; GPU: {len(gpus)} x {gpus[0]}" if gpus and len(set(gpus)) == 1 else (
        f"; GPUs: {', '.join(gpus)}" if gpus else "; no GPU")
    cores = f"{m.get('cores', '?')} cores" + (f" ({m['usable_cores']} usable)" if m.get("usable_cores") not in
                                              (None, m.get("cores")) else "")
    times = f"wall time {_duration(record.get('wall_time_s'))}"
    if record.get("runs_wall_time_s") is not None:
        times += f" (runs: {_duration(record['runs_wall_time_s'])} of train + test, summed)"
    return (f"Made at commit `{short}`{dirty} with {versions}; machine: {m.get('cpu', UNKNOWN)}, "
            f"{cores}{gpu}; {times}.")
