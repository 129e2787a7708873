"""Every number traced to its run: the raw runs of a table, archived beside it, and read back.

Layout, beside a notebook's table.md (``results/<nb>/`` or ``results/<nb>/<scale>/``)::

    runs/<run name>/config.json      the trainer's resolved config, paths in portable form
    runs/<run name>/final.json       its test metrics (paths scrubbed)
    runs/<run name>/metrics.jsonl    one line per epoch and the test line (paths scrubbed)
    runs/<run name>/gblend.json      an offline G-Blend run's weight estimate, where it made one
    runs/<run name>/submitted.json   the config as submitted (portable form): the name's hash
    runs/_late_fusion/<v>+<a>.json   late-fusion metrics of an ensemble row (two runs' checkpoints)
    runs.csv                         one line per cell: row, seed, ``run`` (the run's dir name), ...
    provenance.json                  commit, library versions, machine, wall time (report.provenance)

Checkpoints, logs and the launcher's files (host names, pids, log paths) are not copied. The
run names are the launcher's (``<name>-<portable config hash>``), so ``runs/`` has the layout of
a sweep dir: the table builder reads it as one (:func:`render_only_params`), and a table
regenerates from results/ alone, with no sweeps/ present. The late-fusion cache has the sweep's
layout too (``_late_fusion/``), so Table 6's ensemble row is not evaluated again (it would need
the checkpoints, which are not archived).

:func:`find_machine_paths` lists what in a results/ tree names a path (or the host, user or
home) of the machine that made it; :func:`check_no_machine_paths` raises on any.
"""

from __future__ import annotations

import dataclasses
import getpass
import json
import os
import re
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from avsf.engine.io import disk_full_reported
from avsf.errors import UserError
from avsf.experiments import project_root
from avsf.launch import run_name
from avsf.portable import ABSOLUTE_IN_TEXT, anchors_for, hash_form, scrub_paths
from avsf.report.collect import ENSEMBLE_SEP, LATE_FUSION_DIR, late_fusion_cache_name
from avsf.report.params import Params
from avsf.report.provenance import collect_provenance, data_record, environment_record, provenance_markdown

if TYPE_CHECKING:
    import pandas as pd

RUNS_DIR = "runs"
RUN_FILES = ("config.json", "final.json", "metrics.jsonl")
GBLEND_FILE = "gblend.json"  # written by runs that estimate their Gradient-Blending weights
# the launcher's submitted config (launch.json's, without host, pid, job ids or log paths): the
# run name is its hash, and a render from the archive rebuilds the grid's entries from it
SUBMITTED_FILE = "submitted.json"
PROVENANCE_FILE = "provenance.json"
RUNS_CSV = "runs.csv"
TEXT_SUFFIXES = (".csv", ".md", ".json", ".jsonl", ".txt", ".ipynb", ".yaml", ".yml", ".html", ".svg")


def runs_dir(output_dir: str | os.PathLike) -> Path:
    """The archive of a table's runs: ``<output_dir>/runs``."""
    return Path(output_dir) / RUNS_DIR


def _project_root() -> str:
    return str(project_root())


# --- writing -----------------------------------------------------------------------------------
def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _scrub_jsonl(text: str, anchors) -> str:
    out = []
    for line in text.splitlines():
        try:
            rec = json.loads(line) if line.strip() else None
        except json.JSONDecodeError:
            continue  # a torn last line of a killed run: not a record
        if rec is not None:
            out.append(json.dumps(scrub_paths(rec, anchors), sort_keys=True))
    return "".join(x + "\n" for x in out)


def _submitted_config(run_dir: Path) -> dict[str, Any] | None:
    """The config the launcher submitted (launch.json): what the run's name is the hash of. A run
    restored into a sweep from an archive (results/<nb>/runs/<run>/ copied back, so that another
    table reuses it) has no launch.json but its submitted.json, already in portable form."""
    for name, key in (("launch.json", "config"), (SUBMITTED_FILE, None)):
        try:
            record = json.loads((run_dir / name).read_text())
            return record.get(key) if key else record
        except (OSError, json.JSONDecodeError, AttributeError):
            continue
    return None


def archive_run(run_dir: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Copy one finished run's config.json, final.json, metrics.jsonl (and the submitted config
    of its launch.json, as submitted.json) into `dest`, every
    machine path replaced: config.json in its portable form (:func:`avsf.portable.hash_form`,
    so it hashes as before), final.json and metrics.jsonl through :func:`avsf.portable.scrub_paths`.

    Raises UserError when the run has no final.json (it did not finish)."""
    with disk_full_reported(dest):  # written beside dest, swapped in whole: a full disk leaves the old copy
        return _archive_run(Path(run_dir), Path(dest))


def _archive_run(run_dir: Path, dest: Path) -> Path:
    if not (run_dir / "final.json").is_file():
        raise UserError(f"{run_dir} has no final.json: only finished runs are archived (rerun the grid)")
    cfg = json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").is_file() else None
    anchors = anchors_for(run_dir=str(run_dir), cfg=cfg, project_root=_project_root())
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if cfg is not None:
        _write_json(tmp / "config.json", hash_form(cfg))
    submitted = _submitted_config(run_dir)
    if submitted is not None:
        _write_json(tmp / SUBMITTED_FILE, hash_form(submitted))
    _write_json(tmp / "final.json", scrub_paths(json.loads((run_dir / "final.json").read_text()), anchors))
    if (run_dir / "metrics.jsonl").is_file():
        (tmp / "metrics.jsonl").write_text(_scrub_jsonl((run_dir / "metrics.jsonl").read_text(), anchors))
    if (run_dir / GBLEND_FILE).is_file():  # an offline G-Blend run's estimate: the weights its numbers rest on
        _write_json(tmp / GBLEND_FILE, scrub_paths(json.loads((run_dir / GBLEND_FILE).read_text()), anchors))
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def members(run: str) -> list[str]:
    """The run names behind one cell of runs.csv (two for a late-fusion row, ``v + a``)."""
    return [p for p in str(run).split(ENSEMBLE_SEP) if p]


def _finished_runs(runs: "pd.DataFrame") -> list[str]:
    if not len(runs):
        return []
    finished = runs[runs["finished"].astype(bool)] if "finished" in runs.columns else runs
    return [str(r) for r in finished["run"]]


def archive_runs(runs: "pd.DataFrame", *, run_dirs: Mapping[str, os.PathLike], output_dir: str | os.PathLike,
                 fusion_cache: str | os.PathLike | None = None, prune: bool = True) -> list[str]:
    """Archive every finished run behind a table into ``<output_dir>/runs/``.

    Args:
        runs: report.collect's frame (``row``, ``seed``, ``run``: the run's directory name, or
            ``v + a`` for a late-fusion row; ``finished``).
        run_dirs: run name -> run directory (report.collect.grid_run_dirs).
        fusion_cache: where the late-fusion metrics are cached (``<sweep>/_late_fusion``); each
            ensemble cell's ``<v>+<a>.json`` comes along (paths scrubbed).
        prune: remove archived runs (and cached ensembles) the table no longer names.
    Runs already in the archive (a render from it) are left as they are. Returns the archived
    run names."""
    dest_root = runs_dir(output_dir)
    dest_root.mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    fusion: list[str] = []
    for cell in _finished_runs(runs):
        parts = members(cell)
        for name in parts:
            if name in names:
                continue
            if name not in run_dirs:
                raise UserError(f"run {name} of runs.csv has no directory to archive from")
            names.append(name)
            src = Path(run_dirs[name])
            if src.resolve().parent != dest_root.resolve():
                archive_run(src, dest_root / name)
        if len(parts) == 2 and fusion_cache is not None:
            fname = late_fusion_cache_name(*parts)
            fusion.append(fname)
            src, dst = Path(fusion_cache) / fname, dest_root / LATE_FUSION_DIR / fname
            if not src.is_file():
                raise UserError(f"{src} is missing: the late-fusion row {cell} was not evaluated into its cache")
            if src.resolve() != dst.resolve():
                dst.parent.mkdir(exist_ok=True)
                anchors = anchors_for(run_dir=str(run_dirs[parts[0]]), project_root=_project_root())
                _write_json(dst, scrub_paths(json.loads(src.read_text()), anchors))
    if prune:
        for p in dest_root.iterdir():
            if p.is_dir() and p.name not in names and p.name != LATE_FUSION_DIR:
                shutil.rmtree(p)
        for p in (dest_root / LATE_FUSION_DIR).glob("*.json"):
            if p.name not in fusion:
                p.unlink()
    return names


def _runs_record(runs: "pd.DataFrame", run_dirs: Mapping[str, os.PathLike], *,
                 started: float | None = None) -> dict[str, Any]:
    """What provenance.json says of the runs behind the table, from their directories:
    ``runs_wall_time_s`` (their train + test time, summed; None without a run directory),
    ``data`` (checksum digest of every dataset read), ``environments`` (their machine
    fingerprints), ``runs`` (how many) and ``runs_reused`` (how many had finished before the
    render ``started``, a time.time(): the wall time then covers only the rest)."""
    configs, finals = [], []
    names = dict.fromkeys(n for cell in (_finished_runs(runs) if len(runs) else []) for n in members(cell))
    reused, total, found = 0, 0.0, False
    for name in names:
        if name not in run_dirs:
            continue
        d = Path(run_dirs[name])
        found = True
        for target, fname in ((configs, "config.json"), (finals, "final.json")):
            try:
                target.append(json.loads((d / fname).read_text()))
            except (OSError, json.JSONDecodeError):
                target.append({})
        total += sum(float(finals[-1].get(k) or 0.0) for k in ("train_wall_time_s", "test_wall_time_s"))
        if started is not None:
            try:
                reused += (d / "final.json").stat().st_mtime < started
            except OSError:
                pass
    out: dict[str, Any] = {"runs_wall_time_s": total if found else None, "data": data_record(configs),
                           "environments": environment_record(finals), "runs": len(names)}
    if started is not None:
        out["runs_reused"] = reused
    return out


def process_wall_time_s() -> float | None:
    """Seconds since this process started (a papermill kernel: the notebook's wall time); None
    where /proc is missing."""
    try:
        start_ticks = float(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


def is_render_only(*, output_dir: str | os.PathLike, sweep_dir: str | os.PathLike) -> bool:
    """Whether the table is being rendered from its own archive (the sweep dir is ``runs/``)."""
    return Path(sweep_dir).resolve() == runs_dir(output_dir).resolve()


# the settings a render needs besides the runs, and which a render-only notebook must repeat
SETTINGS = ("notebook", "scale", "seeds", "backend", "overrides")


def notebook_settings(params: Params) -> dict[str, Any]:
    """What a render needs of a notebook's params besides the runs (report.Params): no paths."""
    return {"notebook": params.notebook, "scale": params.scale, "seeds": list(params.seeds),
            "backend": params.backend, "overrides": list(params.overrides)}


def record_table(runs: "pd.DataFrame", *, params: Params, run_dirs: Mapping[str, os.PathLike] | None = None,
                 fusion_cache: str | os.PathLike | None = None, wall_time_s: float | None = None) -> str:
    """The trace of one table, written beside it (``params.output_dir``): runs.csv naming each
    cell's run by its directory name, the runs archived under runs/, provenance.json (with the
    notebook's settings, so ``avsf report`` can render it again). Rendering from the archive
    (:func:`is_render_only`) writes runs.csv again and keeps the stored provenance.

    Args:
        runs: report.collect's frame (``row``, ``seed``, ``run``, ``finished``, metrics).
        params: the notebook's report.Params (output_dir, sweep_dir, scale, seeds, ...).
        run_dirs: run name -> directory of every run in ``runs`` (report.collect.grid_run_dirs).
        fusion_cache: the late-fusion cache folder (report.build's ``ensemble_cache``).
        wall_time_s: how long the notebook took; default: the age of this process (a kernel).
    Returns the provenance line for table.md."""
    out = Path(params.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    run_dirs = run_dirs or {}
    if len(runs):
        runs.to_csv(out / RUNS_CSV, index=False)
    path = out / PROVENANCE_FILE
    if is_render_only(output_dir=out, sweep_dir=params.sweep_dir):
        if not path.is_file():
            return "Provenance: not recorded (this archive predates provenance.json)."
        return provenance_markdown(json.loads(path.read_text()))
    if len(runs):
        archive_runs(runs, run_dirs=run_dirs, output_dir=out, fusion_cache=fusion_cache)
    wall_time_s = process_wall_time_s() if wall_time_s is None else wall_time_s
    runs_record = _runs_record(runs, run_dirs, started=None if wall_time_s is None else time.time() - wall_time_s)
    record = collect_provenance(wall_time_s=wall_time_s, runs_wall_time_s=runs_record.pop("runs_wall_time_s"))
    record["settings"] = notebook_settings(params)
    record.update(runs_record)
    _write_json(path, record)
    return provenance_markdown(record)


# --- reading back (render-only) ----------------------------------------------------------------
@dataclass
class ArchivedRun:
    """One archived run: what the table builder reads of a run dir."""

    name: str
    path: Path
    config: dict[str, Any] | None
    final: dict[str, Any]
    metrics: list[dict[str, Any]]


def load_archive(output_dir: str | os.PathLike) -> dict[str, ArchivedRun]:
    """Every archived run of a table by run name (UserError when there is no archive)."""
    root = runs_dir(output_dir)
    if not root.is_dir():
        raise UserError(f"{root} does not exist: this table has no archived runs; render it once with its "
                        f"sweep present (the notebook archives the runs behind the table)")
    out = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir() and p.name != LATE_FUSION_DIR):
        final = d / "final.json"
        if not final.is_file():
            continue
        metrics = []
        if (d / "metrics.jsonl").is_file():
            metrics = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines() if x.strip()]
        cfg = json.loads((d / "config.json").read_text()) if (d / "config.json").is_file() else None
        out[d.name] = ArchivedRun(d.name, d, cfg, json.loads(final.read_text()), metrics)
    return out


def missing_runs(entries: Iterable[Any], output_dir: str | os.PathLike) -> list[str]:
    """Run names of grid entries (``GridEntry``, with ``.config``) the archive does not hold."""
    have = set(load_archive(output_dir))
    names = [run_name(e.config) for e in entries]
    return [n for n in dict.fromkeys(names) if n not in have]


def render_only_params(params: Params, entries: Iterable[Any] | None = None) -> Params:
    """A copy of a notebook's params (report.Params) whose sweep dir is the table's own archive,
    so report.build reads the archived runs exactly as it reads a sweep. With `entries`, every
    run of the grid must be archived (UserError naming the missing ones)."""
    archive = runs_dir(params.output_dir)
    entries = None if entries is None else list(entries)
    if entries is None or entries:  # a table without runs (Table 1) needs no archive
        load_archive(params.output_dir)  # raises when there is none
    if entries:
        missing = missing_runs(entries, params.output_dir)
        if missing:
            shown = ", ".join(missing[:5]) + (f" ... ({len(missing)} in all)" if len(missing) > 5 else "")
            raise UserError(f"{archive} lacks {len(missing)} run(s) of this grid ({shown}): the archive was "
                            f"made with other seeds, scale or overrides; render with the same parameters, "
                            f"or with the sweep present")
    return dataclasses.replace(params, sweep_dir=archive, render_only=True)


def archived_entries(output_dir: str | os.PathLike) -> list[Any]:
    """The grid entries (experiments.GridEntry) behind a table, rebuilt from its runs.csv and the
    archived submitted configs: a render needs neither the grid builder nor the data (so a
    paper-scale table renders on a machine without the datasets). Ensemble rows add none, as
    in the grid. UserError when the archive lacks a run or its submitted config."""
    from avsf.config import RunConfig  # noqa: PLC0415
    from avsf.experiments import GridEntry  # noqa: PLC0415

    import pandas as pd  # noqa: PLC0415

    out, runs = Path(output_dir), runs_dir(output_dir)
    settings = stored_settings(out)
    table = pd.read_csv(out / RUNS_CSV, dtype={"run": str}) if (out / RUNS_CSV).is_file() else None
    if table is None or "run" not in table.columns:
        raise UserError(f"{out / RUNS_CSV} is missing or has no 'run' column: render this table once with "
                        f"its sweep present")
    entries = []
    for _, r in table.iterrows():
        if ENSEMBLE_SEP in str(r["run"]):
            continue
        path = runs / str(r["run"]) / SUBMITTED_FILE
        if not path.is_file():
            raise UserError(f"{path} is missing: the archive cannot say which config made {r['run']}; render "
                            f"this table once with its sweep present")
        cfg = RunConfig.from_dict(json.loads(path.read_text()))
        if run_name(cfg) != r["run"]:
            raise UserError(f"{path} hashes to {run_name(cfg)}, not to its run's name {r['run']}: "
                            f"it was edited or made by other code; render with the sweep present")
        entries.append(GridEntry(settings["notebook"], str(r["row"]), int(r["seed"]), cfg))
    return entries


def render_only(params: Params) -> Params:
    """A notebook's params (report.Params) in render-only mode: the table is rendered from its
    results folder alone (runs/, runs.csv, provenance.json), nothing is trained or submitted.

    The notebook must ask for the table the archive holds (same notebook, scale, seeds and
    overrides: UserError naming the difference); the backend that made the runs is taken from
    the record (table.md names it). The sweep dir becomes the archive."""
    out = Path(params.output_dir)
    settings = stored_settings(out)
    asked = notebook_settings(params)
    differ = [k for k in SETTINGS if k != "backend" and settings.get(k) != asked[k]]
    if differ:
        shown = "; ".join(f"{k}: archived {settings.get(k)!r}, asked {asked[k]!r}" for k in differ)
        raise UserError(f"render_only: {out.name}/{PROVENANCE_FILE} records another table ({shown}); pass the "
                        f"archived values, or render with the sweep present (render_only=False)")
    return dataclasses.replace(params, sweep_dir=runs_dir(out), backend=settings["backend"], render_only=True)


def render_from_archive(output_dir: str | os.PathLike) -> Any:
    """Render a table (report.build) from its results folder alone: the settings provenance.json
    recorded, the entries of :func:`archived_entries`, the archive as the sweep dir. Returns
    report.Result; the files are written in place (identical when nothing changed)."""
    from avsf.report.build import build  # noqa: PLC0415 (build writes through this module)

    out = Path(output_dir)
    settings = stored_settings(out)
    params = Params(notebook=settings["notebook"], backend=settings["backend"], cluster=None,
                    scale=settings["scale"], seeds=list(settings["seeds"]), data_roots={},
                    output_dir=out, sweep_dir=runs_dir(out), overrides=list(settings["overrides"]))
    return build(render_only(params), archived_or_none(out))


def archived_or_none(output_dir: str | os.PathLike) -> list[Any]:
    """:func:`archived_entries`, or [] for a table without runs (Table 1 counts compute)."""
    return archived_entries(output_dir) if (Path(output_dir) / RUNS_CSV).is_file() else []


def stored_settings(output_dir: str | os.PathLike) -> dict[str, Any]:
    """The notebook settings provenance.json recorded (notebook, scale, seeds, backend, overrides)."""
    path = Path(output_dir) / PROVENANCE_FILE
    try:
        settings = json.loads(path.read_text())["settings"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        raise UserError(f"{path} is missing or records no settings: render this table once with its sweep "
                        f"present") from None
    return settings


# --- checking ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Finding:
    """A machine-specific string found in a results tree."""

    path: str  # relative to the results dir
    line: int
    text: str
    why: str


# results/_executed/: the executed notebooks of `make tables` (git-ignored, never committed; they
# show the parameters with this machine's paths)
EXECUTED_DIR = "_executed"
# the system's own folders name no machine (`/usr/bin/time -v make` in a README is a command)
SYSTEM_PREFIXES = ("/usr/", "/bin/", "/sbin/", "/etc/", "/dev/", "/proc/", "/sys/", "/opt/conda/bin/")


def _literals() -> dict[str, str]:
    """This machine's strings that must never appear: home, project root, host and user names."""
    out = {os.path.expanduser("~"): "the home folder", _project_root(): "the project's path"}
    for name, why in ((socket.gethostname(), "the host name"), (getpass.getuser(), "the user name")):
        if len(name) >= 3 and name not in ("root", "user", "runner"):  # generic or short: too many false hits
            out[name] = why
    return {k: v for k, v in out.items() if k and k != "/"}


# an embedded image's base64 holds "/" runs that read as paths: masked before the checks
DATA_URI = re.compile(r"data:[\w/+.-]+;base64,[A-Za-z0-9+/=\s]+")


def machine_paths_in(text: str, *, rel: str, text_file: bool = True) -> list[Finding]:
    """This machine's home, project path, host and user name in ``text`` (the contents of the
    file ``rel``), and with ``text_file`` any absolute path (``/a/b``, ``~/a``, ``C:\\a``)
    outside the system's folders; embedded images (data URIs) are not read."""
    text = DATA_URI.sub(lambda m: "data:" + "\n" * m.group().count("\n"), text)
    found: list[Finding] = []
    for lit, why in _literals().items():
        pattern = re.compile(rf"(?<![\w.-]){re.escape(lit)}(?![\w-])")
        for m in pattern.finditer(text):
            found.append(Finding(rel, text.count("\n", 0, m.start()) + 1, lit, why))
    if text_file:
        for m in ABSOLUTE_IN_TEXT.finditer(text):
            if m.group().startswith(SYSTEM_PREFIXES):
                continue
            found.append(Finding(rel, text.count("\n", 0, m.start()) + 1, m.group(), "an absolute path"))
    return found


def find_machine_paths(results_dir: str | os.PathLike) -> list[Finding]:
    """:func:`machine_paths_in` every file of a results tree (the absolute-path check in its text
    files, the literals in any file: PNG metadata too), but the executed notebooks."""
    root = Path(results_dir)
    found: list[Finding] = []
    for p in sorted(root.rglob("*")):
        if not p.is_file() or EXECUTED_DIR in p.relative_to(root).parts[:1]:
            continue
        found += machine_paths_in(p.read_bytes().decode("utf-8", errors="replace"), rel=str(p.relative_to(root)),
                                  text_file=p.suffix in TEXT_SUFFIXES)
    return found


def check_no_machine_paths(results_dir: str | os.PathLike) -> None:
    """UserError listing every machine-specific string :func:`find_machine_paths` finds."""
    found = find_machine_paths(results_dir)
    if found:
        shown = "\n".join(f"- {f.path}:{f.line}: {f.text!r} ({f.why})" for f in found[:20])
        more = f"\n... ({len(found)} in all)" if len(found) > 20 else ""
        raise UserError(f"{results_dir} names paths of the machine that made it:\n{shown}{more}\n"
                        f"re-render those tables (avsf.report.archive scrubs runs.csv and the archived runs)")
