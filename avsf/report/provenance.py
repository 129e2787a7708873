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
from typing import Any, Iterable

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


def _manifest_for(folder: Path) -> dict[str, Any] | None:
    """The built-in dataset's manifest of ``folder``, or of the dataset it lies in (a view or
    split folder below it); None when there is none (or it is unreadable)."""
    from avsf.data.synthetic.dataset import read_manifest  # noqa: PLC0415

    for candidate in (folder, *list(folder.parents)[:3]):
        manifest = read_manifest(candidate)
        if manifest is not None:
            return manifest
    return None


def _on_this_machine(folder: Path) -> Path:
    """A folder named in portable form (``<synthetic>/smoke-seed0``: the config of a run restored
    into a sweep from results/) where the built-in data lives in this project."""
    from avsf.experiments import built_in_data_root  # noqa: PLC0415
    from avsf.portable import SYNTHETIC  # noqa: PLC0415

    parts = folder.parts
    if parts and parts[0] == SYNTHETIC:
        return built_in_data_root().joinpath(*parts[1:])
    return folder


def data_record(configs: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The data the runs read, by portable folder (``<synthetic>/smoke-seed0``): the built-in
    dataset's checksum digest, its check outcome and generator version from its manifest.json
    (:mod:`avsf.data.synthetic.checksums`); a user dataset, which has none, says so."""
    from avsf.portable import portable_folder  # noqa: PLC0415

    out: dict[str, dict[str, Any]] = {}
    for cfg in configs:
        data = cfg.get("data", {}) if isinstance(cfg, dict) else {}
        synthetic = str(data.get("synthetic_root") or "")
        if data.get("root"):
            folder = Path(str(data["root"]))
        elif synthetic:
            folder = Path(synthetic) / f"{data.get('synthetic_scale')}-seed{data.get('synthetic_seed')}"
        else:
            continue
        key = portable_folder(str(folder), synthetic_root=synthetic)
        if key in out:
            continue
        m = _manifest_for(_on_this_machine(folder))
        if m is None:
            out[key] = {"check": "no manifest (not the built-in data)"}
            continue
        sums = m.get("checksums") or {}
        out[key] = {"digest": sums.get("digest"), "check": sums.get("check", "not recorded"),
                    "generator_version": m.get("generator_version")}
    return out


def environment_record(finals: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs' environment fingerprints (final.json ``environment``: torch, CPU model and flags,
    thread count), each with how many runs had it: what a rerun must match to give the same bytes."""
    seen: list[dict[str, Any]] = []
    for final in finals:
        env = final.get("environment")
        if env is None:
            continue
        for entry in seen:
            if entry["environment"] == env:
                entry["runs"] += 1
                break
        else:
            seen.append({"environment": env, "runs": 1})
    return seen


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
    if record.get("runs_reused"):
        times += (f", {record['runs_reused']} of {record.get('runs', '?')} runs finished before this render "
                  f"and reused (the wall time leaves them out)")
    text = (f"Made at commit `{short}`{dirty} with {versions}; machine: {m.get('cpu', UNKNOWN)}, "
            f"{cores}{gpu}; {times}.")
    data = record.get("data") or {}
    if data:
        text += " Data: " + "; ".join(
            f"{k} (checksums {str(v.get('digest'))[:12]}, {v.get('check')})" if v.get("digest") else f"{k} ({v.get('check')})"
            for k, v in data.items()) + "."
    envs = record.get("environments") or []
    if envs:
        threads = sorted({e["environment"].get("torch_threads") for e in envs}, key=str)
        text += (f" Runs: {len(envs)} environment fingerprint(s), {', '.join(map(str, threads))} intra-op thread(s) "
                 f"(provenance.json lists them; `avsf verify-results` reruns and compares).")
    return text
