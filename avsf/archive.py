"""Every number traced to its run: the raw runs of a table, archived beside it, and read back.

Layout, beside a notebook's table.md (``results/<nb>/`` or ``results/<nb>/<scale>/``)::

    runs/<run name>/config.json      the trainer's resolved config, paths in portable form
    runs/<run name>/final.json       its test metrics (paths scrubbed)
    runs/<run name>/metrics.jsonl    one line per epoch and the test line (paths scrubbed)
    runs/<run name>/submitted.json   the config as submitted (portable form): the name's hash
    runs/_late_fusion/<v>+<a>.json   late-fusion metrics of an ensemble row (two runs' checkpoints)
    runs.csv                         one line per cell: row, seed, ``run`` (the run's dir name), ...
    provenance.json                  commit, library versions, machine, wall time (avsf.provenance)

Checkpoints, logs and the launcher's files (host names, pids, log paths) are not copied. The
run names are the launcher's (``<name>-<portable config hash>``), so ``runs/`` has the layout of
a sweep dir: the table builder reads it as one (:func:`render_only_params`), and a table
regenerates from results/ alone, with no sweeps/ present.

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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from avsf.errors import UserError
from avsf.portable import ABSOLUTE_IN_TEXT, anchors_for, hash_form, scrub_paths
from avsf.provenance import collect_provenance, provenance_markdown

if TYPE_CHECKING:
    import pandas as pd

RUNS_DIR = "runs"
RUN_FILES = ("config.json", "final.json", "metrics.jsonl")
# the launcher's submitted config (launch.json's, without host, pid, job ids or log paths): the
# run name is its hash, and a render from the archive rebuilds the grid's entries from it
SUBMITTED_FILE = "submitted.json"
LATE_FUSION_DIR = "_late_fusion"  # where report.late_fusion_metrics caches, inside the sweep dir
PROVENANCE_FILE = "provenance.json"
RUNS_CSV = "runs.csv"
ENSEMBLE_SEP = " + "  # report's run_dir of a late-fusion row: "<visual dir> + <audio dir>"
TEXT_SUFFIXES = (".csv", ".md", ".json", ".jsonl", ".txt", ".ipynb", ".yaml", ".yml", ".html", ".svg")


def runs_dir(output_dir: str | os.PathLike) -> Path:
    """The archive of a table's runs: ``<output_dir>/runs``."""
    return Path(output_dir) / RUNS_DIR


def _project_root() -> str:
    return str(Path(__file__).resolve().parents[1])


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
    """The config the launcher submitted (launch.json): what the run's name is the hash of."""
    try:
        return json.loads((run_dir / "launch.json").read_text()).get("config")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None


def archive_run(run_dir: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Copy one finished run's config.json, final.json, metrics.jsonl (and the submitted config
    of its launch.json, as submitted.json) into `dest`, every
    machine path replaced: config.json in its portable form (:func:`avsf.portable.hash_form`,
    so it hashes as before), final.json and metrics.jsonl through :func:`avsf.portable.scrub_paths`.

    Raises UserError when the run has no final.json (it did not finish)."""
    run_dir, dest = Path(run_dir), Path(dest)
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
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def _members(run_dir: str) -> list[Path]:
    """The run dirs behind one cell (two for a late-fusion row)."""
    return [Path(p) for p in str(run_dir).split(ENSEMBLE_SEP) if p]


def run_name(run_dir: str) -> str:
    """A cell's run named by its directory name (``a + b`` for a late-fusion row): relative."""
    return ENSEMBLE_SEP.join(p.name for p in _members(run_dir))


def runs_table(runs: "pd.DataFrame") -> "pd.DataFrame":
    """The runs of a table for runs.csv: ``run_dir`` (an absolute path) becomes ``run``, the run's
    directory name under runs/."""
    out = runs.copy()
    if "run_dir" in out.columns:
        out.insert(list(out.columns).index("run_dir"), "run", [run_name(d) for d in out["run_dir"]])
        out = out.drop(columns=["run_dir"])
    return out


def archive_runs(runs: "pd.DataFrame", *, output_dir: str | os.PathLike, prune: bool = True) -> list[str]:
    """Archive every finished run behind a table (the ``runs`` frame of report.collect, with
    ``run_dir`` and ``finished``) into ``<output_dir>/runs/``; a late-fusion row's cached metrics
    (``<sweep>/_late_fusion/<v>+<a>.json``) come along. Runs already in the archive (a render from
    it) are left as they are. ``prune``: remove archived runs the table no longer names.

    Returns the archived run names."""
    dest_root = runs_dir(output_dir)
    dest_root.mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    fusion: list[str] = []
    finished = runs[runs["finished"].astype(bool)] if "finished" in runs.columns else runs
    for value in finished["run_dir"] if len(finished) else []:
        members = _members(value)
        for run in members:
            if run.name not in names:
                names.append(run.name)
                if run.resolve().parent != dest_root.resolve():
                    archive_run(run, dest_root / run.name)
        if len(members) == 2:
            name = f"{members[0].name}+{members[1].name}.json"
            fusion.append(name)
            src = members[0].parent / LATE_FUSION_DIR / name
            dst = dest_root / LATE_FUSION_DIR / name
            if src.is_file() and src.resolve() != dst.resolve():
                dst.parent.mkdir(exist_ok=True)
                anchors = anchors_for(run_dir=str(members[0]), project_root=_project_root())
                _write_json(dst, scrub_paths(json.loads(src.read_text()), anchors))
    if prune:
        for p in dest_root.iterdir():
            if p.is_dir() and p.name not in names and p.name != LATE_FUSION_DIR:
                shutil.rmtree(p)
        for p in (dest_root / LATE_FUSION_DIR).glob("*.json"):
            if p.name not in fusion:
                p.unlink()
    return names


def _runs_wall_time_s(runs: "pd.DataFrame") -> float | None:
    total, seen = 0.0, set()
    finished = runs[runs["finished"].astype(bool)] if "finished" in runs.columns else runs
    for value in finished["run_dir"] if len(finished) else []:
        for run in _members(value):
            if run.name in seen:
                continue
            seen.add(run.name)
            try:
                final = json.loads((run / "final.json").read_text())
            except (OSError, json.JSONDecodeError):
                continue
            total += sum(float(final.get(k) or 0.0) for k in ("train_wall_time_s", "test_wall_time_s"))
    return total if seen else None


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


def notebook_settings(params: Any) -> dict[str, Any]:
    """What a render needs of a notebook's params besides the runs (report.Params): no paths."""
    return {"notebook": params.notebook, "scale": params.scale, "seeds": list(params.seeds),
            "backend": params.backend, "overrides": list(params.overrides)}


def record_table(runs: "pd.DataFrame", *, params: Any, wall_time_s: float | None = None) -> str:
    """The trace of one table, written beside it (``params.output_dir``): runs.csv naming each
    cell's run by its directory name, the runs archived under runs/, provenance.json (with the
    notebook's settings, so ``avsf report`` can render it again). Rendering from the archive
    (:func:`is_render_only`) writes runs.csv again and keeps the stored provenance.

    Args:
        runs: report.collect's frame (``row``, ``seed``, ``run_dir``, ``finished``, metrics).
        params: the notebook's report.Params (output_dir, sweep_dir, scale, seeds, ...).
        wall_time_s: how long the notebook took; default: the age of this process (a kernel).
    Returns the provenance line for table.md."""
    out = Path(params.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if len(runs):
        runs_table(runs).to_csv(out / RUNS_CSV, index=False)
    path = out / PROVENANCE_FILE
    if is_render_only(output_dir=out, sweep_dir=params.sweep_dir):
        if not path.is_file():
            return "Provenance: not recorded (this archive predates provenance.json)."
        return provenance_markdown(json.loads(path.read_text()))
    if len(runs):
        archive_runs(runs, output_dir=out)
    record = collect_provenance(wall_time_s=process_wall_time_s() if wall_time_s is None else wall_time_s,
                                runs_wall_time_s=_runs_wall_time_s(runs) if len(runs) else None)
    record["settings"] = notebook_settings(params)
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
    names = [f"{e.config.name}-{e.config.config_hash()}" for e in entries]
    return [n for n in dict.fromkeys(names) if n not in have]


def render_only_params(params: Any, entries: Iterable[Any] | None = None) -> Any:
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
    return dataclasses.replace(params, sweep_dir=archive)


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
        if f"{cfg.name}-{cfg.config_hash()}" != r["run"]:
            raise UserError(f"{path} hashes to {cfg.name}-{cfg.config_hash()}, not to its run's name {r['run']}: "
                            f"it was edited or made by other code; render with the sweep present")
        entries.append(GridEntry(settings["notebook"], str(r["row"]), int(r["seed"]), cfg))
    return entries


def render_from_archive(output_dir: str | os.PathLike) -> Any:
    """Render a table (report.build) from its results folder alone: the settings provenance.json
    recorded, the entries of :func:`archived_entries`, the archive as the sweep dir. Returns
    report.Result; the files are written in place (identical when nothing changed)."""
    from avsf import report  # noqa: PLC0415 (the report sits above this module)

    out = Path(output_dir)
    settings = stored_settings(out)
    has_runs = (out / RUNS_CSV).is_file()  # Table 1 counts compute and has no runs
    entries = archived_entries(out) if has_runs else []
    params = report.Params(notebook=settings["notebook"], backend=settings["backend"], cluster=None,
                           scale=settings["scale"], seeds=list(settings["seeds"]), data_roots={},
                           output_dir=out, sweep_dir=runs_dir(out), overrides=list(settings["overrides"]))
    return report.build(params, entries)


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


# the system's own folders name no machine (`/usr/bin/time -v make` in a README is a command)
SYSTEM_PREFIXES = ("/usr/", "/bin/", "/sbin/", "/etc/", "/dev/", "/proc/", "/sys/", "/opt/conda/bin/")


def _literals() -> dict[str, str]:
    """This machine's strings that must never appear: home, project root, host and user names."""
    out = {os.path.expanduser("~"): "the home folder", _project_root(): "the project's path"}
    for name, why in ((socket.gethostname(), "the host name"), (getpass.getuser(), "the user name")):
        if len(name) >= 3 and name not in ("root", "user", "runner"):  # generic or short: too many false hits
            out[name] = why
    return {k: v for k, v in out.items() if k and k != "/"}


def find_machine_paths(results_dir: str | os.PathLike) -> list[Finding]:
    """Absolute paths (``/a/b``, ``~/a``, ``C:\\a``) in the text files of a results tree, and this
    machine's home, project path, host and user name in any file (PNG metadata too)."""
    root = Path(results_dir)
    literals = _literals()
    found: list[Finding] = []
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        rel = str(p.relative_to(root))
        data = p.read_bytes()
        text = data.decode("utf-8", errors="replace")
        for lit, why in literals.items():
            pattern = re.compile(rf"(?<![\w.-]){re.escape(lit)}(?![\w-])")
            for m in pattern.finditer(text):
                found.append(Finding(rel, text.count("\n", 0, m.start()) + 1, lit, why))
        if p.suffix in TEXT_SUFFIXES:
            for m in ABSOLUTE_IN_TEXT.finditer(text):
                if m.group().startswith(SYSTEM_PREFIXES):
                    continue
                found.append(Finding(rel, text.count("\n", 0, m.start()) + 1, m.group(), "an absolute path"))
    return found


def check_no_machine_paths(results_dir: str | os.PathLike) -> None:
    """UserError listing every machine-specific string :func:`find_machine_paths` finds."""
    found = find_machine_paths(results_dir)
    if found:
        shown = "\n".join(f"- {f.path}:{f.line}: {f.text!r} ({f.why})" for f in found[:20])
        more = f"\n... ({len(found)} in all)" if len(found) > 20 else ""
        raise UserError(f"{results_dir} names paths of the machine that made it:\n{shown}{more}\n"
                        f"re-render those tables (avsf.archive scrubs runs.csv and the archived runs)")
