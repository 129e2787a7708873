"""Submit run configs to an executor, never twice, and collect what they did.

Three backends carry the same callable, :class:`RunJob`:

- ``"slurm"``: submitit's AutoExecutor on a Slurm cluster; a sweep goes out as one job array
  with a cap on how many tasks run at once; a run with several GPUs (or nodes) gets one task
  per GPU, and the trainer starts DDP from the job's environment.
- ``"local"``: submitit's LocalExecutor: one process per run on this machine; at most
  ``max_parallel`` train at once (the others wait for a slot, held as an flock).
- ``"debug"``: in this process, one run after the other.

The run directory is the unit of truth and is keyed by a stable, portable hash of the config
(no machine path enters it, see avsf.portable):
``sweep_dir/<cfg.name>-<cfg.config_hash()>``. Files the launcher keeps there:

- ``launch.json``: written by the submitter when it claims the run: the config as submitted
  (what the directory's hash is of), backend, job id, how often it was submitted.
  (``config.json`` is the trainer's: the config as resolved against the dataset, e.g. with
  ``model.num_classes`` filled in, so the launcher keeps the submitted one apart.)
- ``state.json``: written by the job: running / preempted / failed (+ error) / done, attempts.
- ``.claim.lock``: flock held while a process decides about and submits the run, so two
  notebooks launched at once never submit it twice; the kernel drops it when a process dies.
- ``final.json`` (the trainer's): its presence means done, whatever else says.

A run's state is derived from these files and the scheduler's queue, so it survives a crash of
the submitting process: see :func:`run_state`.

Preemption: Slurm sends USR2 (submitit's default; NCCL does not catch it) ``signal_delay_s``
before the end. The job asks the trainer to checkpoint and stop at the next step, then hands
over to submitit, which calls :meth:`RunJob.checkpoint` and requeues. The requeued job carries
only the run directory: it resumes from the newest valid checkpoint it finds there when it
starts, so a node lost without warning (no signal, killed, requeued by the admin) resumes too.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import errno
import functools
import getpass
import importlib
import importlib.util
import inspect
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence, TextIO

from avsf.config import RunConfig
from avsf.console import status_stream
from avsf.engine.io import atomic_write_json
from avsf.errors import USER_ERRORS, UserError
from avsf.portable import PATH_FIELDS

if TYPE_CHECKING:
    import pandas as pd

BACKENDS = ("debug", "local", "slurm")
STATES = ("pending", "running", "done", "failed")
DEFAULT_JOB_FN = "avsf.engine.train:train"
REPO_ROOT = Path(__file__).resolve().parents[1]
CLUSTER_DIR = REPO_ROOT / "slurm"
ERROR_TAIL_LINES = 20
SUBMITIT_DIR = ".submitit"
SLOTS_DIR = ".slots"

# Slurm job states (squeue -t all) that mean the job will not run again by itself.
_SLURM_ACTIVE = {"PENDING": "pending", "CONFIGURING": "pending", "REQUEUED": "pending",
                 "REQUEUE_FED": "pending", "REQUEUE_HOLD": "pending", "RESV_DEL_HOLD": "pending",
                 "SUSPENDED": "pending", "STOPPED": "pending", "RESIZING": "running",
                 "RUNNING": "running", "COMPLETING": "running", "SIGNALING": "running",
                 "STAGE_OUT": "running"}


# --- cluster profiles -------------------------------------------------------------------
@dataclass
class ClusterProfile:
    """Resources for one run, as ``slurm/<name>.yaml`` spells them (all per run).

    A run with ``gpus_per_node > 0`` gets one task per GPU on each of its ``nodes``; the
    trainer joins them into one DDP group from the job's environment.
    """

    name: str = "local"
    partition: str = ""
    account: str = ""
    qos: str = ""
    constraint: str = ""
    gpus_per_node: int = 0
    cpu_tasks_per_node: int = 0  # without GPUs: DDP processes per node (0 = one process)
    nodes: int = 1
    cpus_per_task: int = 1
    mem_gb: float = 0.0  # 0 = do not ask (the scheduler's default)
    timeout_min: int = 60
    signal_delay_s: int = 120  # USR2 this long before the time limit: time to write a checkpoint
    max_requeues: int = 10  # time-outs after which submitit gives up requeueing
    # failed attempts after which a run is not submitted again, even with retry_failed
    # (preemptions and time-outs are requeues, not failures, and do not count)
    max_attempts: int = 3
    array_parallelism: int = 64  # default cap on array tasks running at once
    setup: list[str] = field(default_factory=list)  # shell lines run before the job (module load, ...)
    python: str = ""  # the job's python; empty = the submitting interpreter (sys.executable)
    additional_parameters: dict[str, Any] = field(default_factory=dict)  # raw sbatch options

    @property
    def tasks_per_node(self) -> int:
        """One task (DDP process) per GPU; without GPUs, ``cpu_tasks_per_node`` (gloo) or one."""
        return self.gpus_per_node if self.gpus_per_node > 0 else max(1, self.cpu_tasks_per_node)

    @property
    def job_python(self) -> str:
        return self.python or sys.executable


def load_cluster(name_or_path: str | os.PathLike | None) -> ClusterProfile:
    """Read a profile: a name in ``slurm/`` (``local``, ``gpu_cluster.example``) or a YAML path."""
    import yaml

    if name_or_path is None or name_or_path == "":
        name_or_path = "local"
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = CLUSTER_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in CLUSTER_DIR.glob("*.yaml"))
        raise UserError(f"cluster profile {str(name_or_path)!r} not found (looked for {path}); "
                        f"known profiles: {', '.join(known)}; or pass a path to a YAML file")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of profile fields, got {type(data).__name__}")
    allowed = {f.name for f in dataclasses.fields(ClusterProfile)}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise UserError(f"{path}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    data.setdefault("name", path.stem)
    profile = ClusterProfile(**{k: ("" if v is None and isinstance(getattr(ClusterProfile, k, None), str) else v)
                                for k, v in data.items()})
    for key in ("gpus_per_node", "cpu_tasks_per_node", "nodes", "cpus_per_task", "timeout_min", "signal_delay_s", "array_parallelism"):
        value = getattr(profile, key)
        lowest = 0 if key in ("gpus_per_node", "cpu_tasks_per_node") else 1
        if not isinstance(value, int) or isinstance(value, bool) or value < lowest:
            raise UserError(f"{path}: {key}={value!r} must be a {'non-negative' if lowest == 0 else 'positive'} integer")
    if profile.signal_delay_s >= profile.timeout_min * 60:
        raise UserError(f"{path}: signal_delay_s={profile.signal_delay_s} must be shorter than "
                        f"timeout_min={profile.timeout_min} minutes")
    if not isinstance(profile.setup, list):
        raise UserError(f"{path}: setup must be a list of shell lines")
    return profile


# --- small file helpers -----------------------------------------------------------------
def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """This code's version: the package version and, in a git checkout, its commit
    (``0.1.0+g<12 hex>``). Recorded in launch.json; a sweep directory whose unfinished runs
    were submitted by another version is refused (see :func:`submit`)."""
    from avsf import __version__

    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return __version__
    commit = out.stdout.strip() if out.returncode == 0 else ""
    return f"{__version__}+g{commit[:12]}" if commit else __version__


def _write_json(path: Path, obj: Any) -> None:
    """Atomic (readers see the old file or the whole new one), and a full disk says so."""
    atomic_write_json(path, obj)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _tail(path: Path | str | None, lines: int = ERROR_TAIL_LINES) -> str:
    if not path:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _log(run_dir: Path, message: str) -> None:
    """One line in the run's launch.log (who ran it, when, from which checkpoint)."""
    with open(run_dir / "launch.log", "a") as f:
        f.write(f"{_now()} {message}\n")


def submitted_config(run_dir: str | os.PathLike) -> RunConfig:
    """The config a run directory was submitted with (from its launch.json)."""
    launch = _read_json(Path(run_dir) / "launch.json")
    if not launch or "config" not in launch:
        raise UserError(f"{run_dir} has no launch.json with a config: it was not submitted by avsf.launch")
    return RunConfig.from_dict(launch["config"])


def repoint(run_dir: str | os.PathLike, cfg: RunConfig) -> None:
    """Point a run dir made at other paths (same portable hash) at this machine's: launch.json's
    config becomes `cfg`, config.json (the trainer's resolved copy) takes `cfg`'s path fields,
    and launch.log says so. Numbers and checkpoints are untouched."""
    run_dir = Path(run_dir)
    launch = _read_json(run_dir / "launch.json") or {}
    if not launch:
        return
    _write_json(run_dir / "launch.json", {**launch, "config": cfg.to_dict()})
    resolved = _read_json(run_dir / "config.json")
    if resolved is not None:
        new = cfg.to_dict()
        for section, key in PATH_FIELDS:
            if key in resolved.get(section, {}):
                resolved[section][key] = new[section][key]
        _write_json(run_dir / "config.json", resolved)
    _log(run_dir, f"re-pointed to this machine's paths (data.root {cfg.data.root!r}, "
                  f"data.synthetic_root {cfg.data.synthetic_root!r})")


def run_name(cfg: RunConfig) -> str:
    """A run directory's name in any sweep dir: ``<cfg.name>-<cfg.config_hash()>``."""
    return f"{cfg.name}-{cfg.config_hash()}"


def run_dir_for(cfg: RunConfig, sweep_dir: str | os.PathLike) -> Path:
    """``sweep_dir/<name>-<config_hash>``: the same config always lands in the same place."""
    return Path(sweep_dir) / run_name(cfg)


def newest_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint file in ``run_dir/checkpoints`` (names sort by step), if any.

    Only for the launcher's log line: the trainer itself picks the newest *valid* one.
    """
    ckpts = [p for p in (run_dir / "checkpoints").glob("*") if p.is_file() and not p.name.startswith(".")]
    return max(ckpts, key=lambda p: (p.name, p.stat().st_mtime)) if ckpts else None


# --- the job ----------------------------------------------------------------------------
def resolve_job_fn(spec: str) -> Callable[..., Any]:
    """``"package.module:function"`` or ``"/path/to/file.py:function"`` -> the function."""
    if ":" not in spec:
        raise UserError(f"job function {spec!r} must be 'module:function' or 'file.py:function'")
    where, _, attr = spec.rpartition(":")
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise UserError(f"job function file {where} not found")
        mod_name = f"_avsf_job_{path.stem}"
        module = sys.modules.get(mod_name)
        if module is None:
            module_spec = importlib.util.spec_from_file_location(mod_name, path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[mod_name] = module
            module_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(where)
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise UserError(f"job function {spec!r}: {where} has no function {attr!r}")
    return fn


class _StopRequest:
    """Turns the preemption signal into an event the trainer polls between steps.

    submitit installs its handler (checkpoint + requeue + exit) before the job starts; we put
    ours in front so the trainer can finish the step and write a checkpoint first, then hand
    over to submitit's. A trainer without the hook gets submitit's handler right away (it then
    resumes from its newest periodic checkpoint)."""

    def __init__(self, *, cooperative: bool) -> None:
        self.cooperative = cooperative
        self.event = threading.Event()  # the trainer's ``stop_event``
        self.signum = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), signal.SIGUSR2)
        self._previous: Any = None
        self._installed = False

    def install(self) -> "_StopRequest":
        if os.environ.get("SUBMITIT_EXECUTOR") and threading.current_thread() is threading.main_thread():
            self._previous = signal.getsignal(self.signum)
            signal.signal(self.signum, self._on_signal)
            self._installed = True
        return self

    @property
    def requested(self) -> bool:
        return self.event.is_set()

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.event.set()
        if not self.cooperative:
            self.hand_over()

    def hand_over(self) -> None:
        """Run submitit's handler: it calls RunJob.checkpoint(), requeues, and exits."""
        if not self._installed:
            return
        signal.signal(self.signum, self._previous)
        if callable(self._previous):
            self._previous(self.signum, None)


def memory_cgroup(pid: int | str = "self") -> Path | None:
    """The memory cgroup folder of a process (cgroup v1's memory controller, else v2's unified
    hierarchy), where this machine shows it; None elsewhere."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    found = {}
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3:
            found[parts[1]] = parts[2]
    candidates = []
    if "memory" in found:
        candidates.append(Path("/sys/fs/cgroup/memory") / found["memory"].lstrip("/"))
    if "" in found:
        candidates += [Path(root) / found[""].lstrip("/") for root in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified")]
    return next((c for c in candidates if (c / "memory.oom_control").is_file() or (c / "memory.events").is_file()), None)


def _read_number(path: Path, key: str | None = None) -> int | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    if key is None:
        value = text.strip()
        return None if value in ("", "max") or not value.isdigit() or int(value) >= 2**62 else int(value)
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return None


def oom_counters(cgroup: Path | None) -> dict[str, Any]:
    """The kernel's out-of-memory kill counts: in a memory cgroup (and its limit) and on the
    whole machine (/proc/vmstat). A job records them when it starts, so a job that dies without
    a word can be told apart as killed by the OOM killer (see :func:`local_kill_reason`)."""
    out: dict[str, Any] = {"cgroup": str(cgroup) if cgroup else None, "cgroup_oom_kills": None, "limit_bytes": None,
                           "machine_oom_kills": _read_number(Path("/proc/vmstat"), "oom_kill")}
    if cgroup is not None:
        v1 = (cgroup / "memory.oom_control").is_file()
        out["cgroup_oom_kills"] = _read_number(cgroup / ("memory.oom_control" if v1 else "memory.events"), "oom_kill")
        out["limit_bytes"] = _read_number(cgroup / ("memory.limit_in_bytes" if v1 else "memory.max"))
    return out


def local_kill_reason(state: dict[str, Any]) -> str | None:
    """Why a job on this machine died without writing its error: the kernel's OOM killer, when
    the kill counts recorded at its start rose while it ran. None when they did not (or were
    not readable: the exit status of a job that is not our child is lost)."""
    start = state.get("oom") or {}
    cgroup = Path(start["cgroup"]) if start.get("cgroup") else None
    now = oom_counters(cgroup)
    limit = start.get("limit_bytes")
    advice = ("Lower solver.batch_size or data.num_workers, or give the job more memory; submit again and it "
              "resumes from its newest checkpoint")
    if None not in (start.get("cgroup_oom_kills"), now["cgroup_oom_kills"]) and \
            now["cgroup_oom_kills"] > start["cgroup_oom_kills"]:
        where = f"its memory cgroup's limit of {_gib(limit)}" if limit else "its memory cgroup"
        return (f"out of memory: the kernel's OOM killer ended the job at {where} (the cgroup's oom_kill count "
                f"rose from {start['cgroup_oom_kills']} to {now['cgroup_oom_kills']} while it ran). {advice}")
    if None not in (start.get("machine_oom_kills"), now["machine_oom_kills"]) and \
            now["machine_oom_kills"] > start["machine_oom_kills"]:
        return (f"out of memory, most likely: the job died without a word while the kernel's OOM killer killed "
                f"processes on this machine (oom_kill {start['machine_oom_kills']} -> {now['machine_oom_kills']}). "
                f"{advice}")
    return None


def _job_identity() -> dict[str, Any]:
    """Job id, rank and host of this process under submitit (or of the debug process)."""
    info: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid(), "job_id": f"debug-{os.getpid()}",
                            "rank": 0, "world_size": 1}
    if os.environ.get("SUBMITIT_EXECUTOR"):
        import submitit

        env = submitit.JobEnvironment()
        job_id = env.job_id
        if env.array_job_id and env.array_task_id:
            job_id = f"{env.array_job_id}_{env.array_task_id}"
        info.update(job_id=str(job_id), rank=env.global_rank, world_size=env.num_tasks)
    return info


class _Slot:
    """At most `limit` local runs train at once: each holds one of `limit` flock files."""

    def __init__(self, *, slots_dir: str | None, limit: int) -> None:
        self.slots_dir = Path(slots_dir) if slots_dir else None
        self.limit = limit
        self._lock: Any = None

    def __enter__(self) -> "_Slot":
        if self.slots_dir is None or self.limit <= 0:
            return self
        from filelock import FileLock, Timeout

        self.slots_dir.mkdir(parents=True, exist_ok=True)
        while True:
            for k in range(self.limit):
                lock = FileLock(str(self.slots_dir / f"slot-{k}.lock"))
                try:
                    lock.acquire(timeout=0)
                except Timeout:
                    continue
                self._lock = lock
                return self
            time.sleep(0.5)

    def __exit__(self, *exc: Any) -> None:
        if self._lock is not None:
            self._lock.release()


class RunJob:
    """The callable every backend runs: one run, resumable, checkpointable.

    It carries only the run directory and the job function's import path: what to resume from
    is looked up when the job starts (never frozen into the pickle at submission).
    """

    def __init__(self, *, run_dir: str, job_fn: str = DEFAULT_JOB_FN, slots_dir: str | None = None,
                 max_parallel: int = 0) -> None:
        self.run_dir = str(run_dir)
        self.job_fn = job_fn
        self.slots_dir = slots_dir
        self.max_parallel = max_parallel

    def __call__(self) -> dict[str, Any]:
        run_dir = Path(self.run_dir)
        me = _job_identity()
        fn = resolve_job_fn(self.job_fn)
        cooperative = "stop_event" in inspect.signature(fn).parameters
        stop = _StopRequest(cooperative=cooperative).install()
        cfg = submitted_config(run_dir)
        kwargs = {"stop_event": stop.event} if cooperative else {}
        if me["rank"] != 0:  # DDP members train; rank 0 keeps the books
            return fn(cfg, run_dir, **kwargs)
        with _Slot(slots_dir=self.slots_dir, limit=self.max_parallel):
            state = _read_json(run_dir / "state.json") or {}
            attempt = int(state.get("attempts", 0)) + 1
            ckpt = newest_checkpoint(run_dir)
            started = {"state": "running", "attempts": attempt, "job_id": me["job_id"], "host": me["host"],
                       "pid": me["pid"], "world_size": me["world_size"], "started_at": _now(),
                       "oom": oom_counters(memory_cgroup())}
            _write_json(run_dir / "state.json", started)
            _log(run_dir, f"attempt {attempt} started: job {me['job_id']} on {me['host']} pid {me['pid']}, "
                          f"{me['world_size']} task(s); newest checkpoint: {ckpt.name if ckpt else 'none (fresh start)'}")
            try:
                result = fn(cfg, run_dir, **kwargs)
            except BaseException as e:
                if isinstance(e, SystemExit) and stop.requested:  # submitit requeues: not a failure
                    _write_json(run_dir / "state.json", {**started, "state": "preempted", "stopped_at": _now()})
                    _log(run_dir, f"attempt {attempt} preempted; requeued")
                    raise
                # the tail of the run's log, then where it broke (the traceback's last lines)
                error = "\n".join(traceback.format_exc().splitlines()[-ERROR_TAIL_LINES // 2:])
                log_tail = _tail(run_dir / "log.txt", ERROR_TAIL_LINES // 2)
                _write_json(run_dir / "state.json", {**started, "state": "failed", "ended_at": _now(),
                                                     "error": (log_tail + "\n" + error).strip(),
                                                     "reason": exception_reason(e)})
                _log(run_dir, f"attempt {attempt} failed: {type(e).__name__}: {e}")
                raise
            if stop.requested and not (run_dir / "final.json").exists():
                _write_json(run_dir / "state.json", {**started, "state": "preempted", "stopped_at": _now()})
                _log(run_dir, f"attempt {attempt} stopped at a checkpoint after the preemption signal; requeueing")
                stop.hand_over()  # checkpoint() + requeue + exit (does not return under submitit)
                return {"preempted": True}
            _write_json(run_dir / "state.json", {**started, "state": "done", "ended_at": _now()})
            _log(run_dir, f"attempt {attempt} finished")
            return result

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit calls this on preemption/time-out: requeue the same run directory."""
        import submitit

        return submitit.helpers.DelayedSubmission(
            RunJob(run_dir=self.run_dir, job_fn=self.job_fn, slots_dir=self.slots_dir,
                   max_parallel=self.max_parallel))

    def __repr__(self) -> str:
        return f"RunJob(run_dir={self.run_dir!r}, job_fn={self.job_fn!r})"


# --- run states -------------------------------------------------------------------------
# messages written for the user, shown without the type (by name: a traceback's last line)
_PLAIN_ERRORS = ("UserError", "ConfigError", "DiskFullError", "OutOfMemory", "DataGoneError", "SilentAudioError",
                 "DecodeError")
_EXCEPTION_LINE = re.compile(r"^(?P<type>[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)): (?P<message>.*)$")


def exception_reason(e: BaseException) -> str:
    """One line saying what went wrong: the message's first line, prefixed by the exception's
    type unless it is one of avsf's user-facing errors."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    message = lines[0] if lines else ""
    name = type(e).__name__
    if (name in _PLAIN_ERRORS or isinstance(e, USER_ERRORS)) and message:
        return message
    return f"{name}: {message}" if message else name


def failure_reason(error: str) -> str:
    """The one-line reason in an error tail (a state.json of an older launcher has none): the
    traceback's last ``Type: message`` line, else the error's last non-empty line."""
    lines = [ln.strip() for ln in (error or "").splitlines() if ln.strip()]
    for line in reversed(lines):
        if m := _EXCEPTION_LINE.match(line):
            name = m["type"].rsplit(".", 1)[-1]
            return m["message"] if name in _PLAIN_ERRORS else f"{name}: {m['message']}"
    return lines[-1] if lines else "unknown error (no log)"


def _slurm_queue(job_ids: Iterable[str]) -> dict[str, str] | None:
    """Slurm state of each job id (array tasks as ``ARRAY_TASK``); None if squeue fails."""
    ids = sorted({j.split("_")[0] for j in job_ids if j})
    if not ids:
        return {}
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-j", ",".join(ids), "-o", "%i %T"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        if "Invalid job id" in out.stderr:  # every job long gone from the controller
            return {}
        return None
    states = {}
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            states[parts[0]] = parts[1]
    return states


def _pid_alive(pid: Any, host: str | None) -> bool | None:
    """Whether a process of this machine lives; None when it ran on another host."""
    if host and host != socket.gethostname():
        return None
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:
        return True
    try:  # an exited child nobody has reaped yet (a zombie) is not alive
        return Path(f"/proc/{int(pid)}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _claim_held(run_dir: Path) -> bool:
    """Whether some process holds the run's claim lock right now (it is submitting it)."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(run_dir / ".claim.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    return False


def run_state(run_dir: str | os.PathLike, *, queue: dict[str, str] | None | bool = False,
              claim_held: bool | None = None) -> dict[str, Any]:
    """State of one run from its files (and the scheduler); see :func:`_run_state`. ``failures``
    counts the failed attempts, the current one included."""
    st = _run_state(run_dir, queue=queue, claim_held=claim_held)
    if st["state"] == "failed" and st["note"] not in ("given up", "unsubmitted"):
        st["failures"] += 1
    return st


def _run_state(run_dir: str | os.PathLike, *, queue: dict[str, str] | None | bool = False,
               claim_held: bool | None = None) -> dict[str, Any]:
    """State of one run from its files (and the scheduler): one of :data:`STATES`.

    ``queue``: Slurm states by job id from :func:`_slurm_queue` (False: ask squeue here; None:
    squeue was unreachable, trust the files). ``claim_held``: whether a process is submitting
    the run right now (None: look at its lock). Returns state, job_id, backend, attempts,
    submissions, error (for a failed run: the tail of its log), reason (for a failed run: what
    went wrong in one line) and note.
    """
    run_dir = Path(run_dir)
    launch = _read_json(run_dir / "launch.json") or {}
    state = _read_json(run_dir / "state.json") or {}
    out = {"state": "pending", "job_id": launch.get("job_id") or state.get("job_id"),
           "backend": launch.get("backend"), "attempts": int(state.get("attempts", 0)),
           "submissions": int(launch.get("submissions", 0)), "failures": len(launch.get("failures", [])),
           "error": "", "reason": "", "note": ""}
    if (run_dir / "final.json").exists():
        return {**out, "state": "done"}

    def held() -> bool:
        return _claim_held(run_dir) if claim_held is None else claim_held

    if not launch:
        if held():
            return {**out, "note": "being submitted"}
        return {**out, "state": "failed", "error": "never submitted (no launch.json)",
                "reason": "never submitted (no launch.json)", "note": "unsubmitted"}
    if launch.get("submit_error"):
        return {**out, "state": "failed", "error": launch["submit_error"], "reason": launch["submit_error"]}
    job_state = state.get("state")  # None (not started yet), running, preempted, failed, done
    if launch.get("gave_up"):
        return {**out, "state": "failed", "error": state.get("error", "") or launch["gave_up"],
                "reason": launch["gave_up"], "note": "given up"}
    if job_state == "failed":
        error = state.get("error", "")
        return {**out, "state": "failed", "error": error, "reason": state.get("reason") or failure_reason(error)}
    backend = launch.get("backend")
    if not launch.get("job_id") or backend == "debug":
        # debug runs in the submitting process, which holds the claim until it is through
        if held():
            return {**out, "state": "running" if job_state == "running" else "pending",
                    "note": "being submitted" if not launch.get("job_id") else ""}
        if not launch.get("job_id"):
            died = "the submitting process died before the job was queued"
            return {**out, "state": "failed", "error": died, "reason": died}
        ended_note = "debug process ended"
    elif backend == "slurm":
        if queue is False:
            queue = _slurm_queue([str(launch["job_id"])])
        if queue is None:  # scheduler unreachable: report what the files say
            return {**out, "state": "running" if job_state == "running" else "pending",
                    "note": "squeue unreachable; state from files"}
        slurm_state = queue.get(str(launch["job_id"]))
        if slurm_state in _SLURM_ACTIVE:
            return {**out, "state": _SLURM_ACTIVE[slurm_state], "note": slurm_state.lower()}
        ended_note = f"slurm: {slurm_state.lower() if slurm_state else 'no longer in the queue'}"
        if not (run_dir / "final.json").exists() and (killed := slurm_kill_reason(launch, slurm_state)):
            error = "\n".join([killed, _tail(launch.get("stderr"), ERROR_TAIL_LINES // 2),
                               _tail(run_dir / "log.txt", ERROR_TAIL_LINES // 2)])
            return {**out, "state": "failed", "error": error.strip(), "note": ended_note, "reason": killed}
    else:  # local: the job id is the pid of submitit's controller process
        alive = _pid_alive(launch["job_id"], launch.get("host"))
        if alive or alive is None:
            return {**out, "state": "running" if job_state == "running" else "pending",
                    "note": "" if alive else "on another host; state from files"}
        ended_note = "process ended"
        if job_state == "running" and not (run_dir / "final.json").exists() and (killed := local_kill_reason(state)):
            error = "\n".join([killed, _tail(run_dir / "log.txt", ERROR_TAIL_LINES // 2)])
            return {**out, "state": "failed", "error": error.strip(), "note": ended_note, "reason": killed}
    if (run_dir / "final.json").exists():  # finished between our first look and the queue's
        return {**out, "state": "done"}
    error = state.get("error") or "\n".join(
        [f"the job ended without writing final.json ({ended_note}); the last lines of its logs:",
         _tail(launch.get("stderr"), ERROR_TAIL_LINES // 2), _tail(run_dir / "log.txt", ERROR_TAIL_LINES // 2)])
    return {**out, "state": "failed", "error": error.strip(), "note": ended_note,
            "reason": f"the job ended without writing final.json ({ended_note})"}


# a job's log when slurmstepd killed it at its memory limit (jobacct_gather's OverMemoryKill,
# or the cgroup's OOM killer), with the bytes used and allowed where it says them
_SLURM_OOM = re.compile(r"exceeded (?:job )?memory limit(?: \((?P<used>\d+) > (?P<limit>\d+)\))?|oom[-_ ]kill|"
                        r"out[-_ ]of[-_ ]memory", re.IGNORECASE)


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def _slurm_job_fields(job_id: str) -> dict[str, str]:
    """``scontrol show job -o`` fields (JobState, ExitCode, MinMemoryNode...), else sacct's
    (State, ExitCode, ReqMem) for a job the controller has forgotten; {} when neither answers."""
    for cmd in (["scontrol", "show", "job", "-o", job_id],
                ["sacct", "-n", "-P", "-X", "-j", job_id, "-o", "State,ExitCode,ReqMem"]):
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        text = out.stdout.strip()
        if out.returncode != 0 or not text:
            continue
        if cmd[0] == "scontrol":
            return dict(f.split("=", 1) for f in text.split() if "=" in f)
        state, code, mem = (text.splitlines()[0].split("|") + ["", "", ""])[:3]
        return {"JobState": state.split()[0], "ExitCode": code, "MinMemoryNode": mem}
    return {}


def slurm_kill_reason(launch: dict[str, Any], slurm_state: str | None) -> str | None:
    """Why Slurm or the kernel killed a job that wrote no error, in one line: out of memory at
    Slurm's limit (state OUT_OF_MEMORY, or slurmstepd's message in the job's log), or a SIGKILL
    (exit 137) with no word from the job, which is most often the kernel's OOM killer. None when
    the job was not killed that way."""
    job_id = str(launch.get("job_id") or "")
    fields = _slurm_job_fields(job_id) if job_id and shutil.which("scontrol") else {}
    state = (slurm_state or fields.get("JobState") or "").upper()
    logs = "\n".join(_tail(launch.get(k), 200) for k in ("stderr", "stdout"))
    hit = _SLURM_OOM.search(logs)
    mem_gb = float(launch.get("mem_gb") or 0)
    asked = f"{mem_gb:g} GiB asked (mem_gb)" if mem_gb else f"limit {fields.get('MinMemoryNode') or 'the partition default'}"
    if state == "OUT_OF_MEMORY" or hit:
        seen = f"; it reached {_gib(int(hit['used']))} of {_gib(int(hit['limit']))}" if hit and hit["used"] else ""
        return (f"out of memory: Slurm killed the job at its memory limit ({asked}{seen}). Ask for more memory "
                f"(mem_gb in the cluster profile) or lower solver.batch_size or data.num_workers; submit again "
                f"and it resumes from its newest checkpoint")
    code = fields.get("ExitCode", "")
    if code.endswith(":9") or code.startswith("137:"):
        return (f"killed by SIGKILL (exit 137) without an error of its own: most often the kernel's out-of-memory "
                f"killer (the node's memory, {asked}), else an admin. Ask for more memory or lower "
                f"solver.batch_size or data.num_workers; submit again and it resumes from its newest checkpoint")
    return None


# --- submission -------------------------------------------------------------------------
@dataclass
class SubmitReport:
    """What :func:`submit` did with each run directory."""

    submitted: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)  # final.json exists: never again
    active: list[str] = field(default_factory=list)  # pending/running, or being submitted by another process
    failed: dict[str, str] = field(default_factory=dict)  # failed and not retried: run dir -> error tail
    jobs: list[str] = field(default_factory=list)  # job ids (local: pid; slurm: ARRAY_TASK)
    other_version: dict[str, str] = field(default_factory=dict)  # finished runs of other code: run dir -> version

    def summary(self) -> str:
        return (f"submitted {len(self.submitted)}, already done {len(self.done)}, "
                f"pending/running {len(self.active)}, failed (not retried) {len(self.failed)}")

    def merge(self, other: "SubmitReport") -> None:
        """Add ``other``'s runs (another :func:`submit` call of the same sweep) to this report."""
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if isinstance(mine, dict):
                mine.update(theirs)
            else:
                mine.extend(theirs)

    def show(self, sweep_dir: str | os.PathLike, *, out: TextIO | None = None) -> None:
        """The summary line, reused runs of other versions and the errors of failed runs not
        retried, on ``out`` (default :func:`avsf.console.status_stream`)."""
        out = status_stream() if out is None else out
        print(f"avsf.launch: {self.summary()} ({sweep_dir})", file=out, flush=True)
        for run_dir, version in self.other_version.items():
            print(f"avsf.launch: reused {Path(run_dir).name}, finished by avsf {version} (this is {code_version()})",
                  file=out, flush=True)
        for run_dir, error in self.failed.items():
            print(f"--- failed: {Path(run_dir).name} (submit again with retry_failed=True / --retry-failed)\n"
                  f"{error}", file=out, flush=True)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return str(os.getuid())


def give_up_reason(failures: list[dict[str, Any]], *, max_attempts: int) -> str:
    """The one line a given-up run shows: how often it failed, the last reason, what to do."""
    reasons = [f.get("reason", "") for f in failures]
    same = "the same way " if len(set(reasons)) == 1 else ""
    return (f"gave up after {len(failures)} failed attempts {same}(max_attempts={max_attempts}; preemptions "
            f"do not count); last: {reasons[-1]}. Fix the cause, then submit with a higher max_attempts "
            f"(--max-attempts)")


def check_sweep_dir(sweep_dir: Path) -> None:
    """Create the sweep directory if needed and prove it writable, or say what to do. Called
    before any run is claimed, so a read-only or unmounted share costs nothing."""
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        parent = next((p for p in sweep_dir.parents if p.exists()), None)
        raise UserError(f"cannot create the sweep directory {sweep_dir} ({e.strerror}; the nearest existing "
                        f"folder is {parent}): is its filesystem mounted and writable? Create it, or pass "
                        f"another sweep directory (--out / sweep_dir)") from e
    probe = sweep_dir / f".write-probe.{socket.gethostname()}.{os.getpid()}"
    try:  # os.access can say yes on read-only and network mounts; a real write cannot
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        what = "read-only" if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM) else "not writable"
        raise UserError(f"the sweep directory {sweep_dir} is {what} ({e.strerror}): nothing was submitted. "
                        f"Remount it writable, fix its permissions, or pass another sweep directory "
                        f"(--out / sweep_dir)") from e


def check_versions(run_dirs: Iterable[Path], *, allow_other_version: bool) -> dict[str, str]:
    """Refuse (UserError) when an unfinished run was submitted by another code version; return
    the finished ones that were (run dir -> version), which are reused. A launch.json without a
    version (written before versions were recorded) counts as this version."""
    mine, theirs, finished = code_version(), [], {}
    for run_dir in run_dirs:
        launch = _read_json(run_dir / "launch.json") or {}
        version = launch.get("avsf_version")
        if not version or version == mine:
            continue
        if (run_dir / "final.json").exists():
            finished[str(run_dir)] = version
        else:
            theirs.append((run_dir, version, launch.get("user", "?")))
    if theirs and not allow_other_version:
        run_dir, version, user = theirs[0]
        raise UserError(f"{len(theirs)} unfinished run(s) in {run_dir.parent} were submitted by another avsf version "
                        f"(first: {run_dir.name}, by {version}, user {user}; this is {mine}): resuming them here "
                        f"would mix two versions in one run. Nothing was submitted. Use another sweep directory "
                        f"(--out / sweep_dir), or take them over with this code (--allow-other-version / "
                        f"allow_other_version=True)")
    return finished


def check_backend(backend: str) -> None:
    """UserError naming the known backends unless `backend` is one of them."""
    if backend not in BACKENDS:
        raise UserError(f"backend {backend!r} is not known; choose one of {', '.join(BACKENDS)}")


def _make_executor(*, backend: str, folder: Path, profile: ClusterProfile, max_parallel: int, job_name: str,
                   after: Sequence[str] = ()) -> Any:
    """A submitit executor for `backend` with the profile's resources (one run per job);
    ``after``: Slurm job ids the jobs wait for (see :func:`submit`)."""
    import submitit

    if backend == "local":
        executor = submitit.LocalExecutor(folder=folder, python=profile.job_python,
                                          max_num_timeout=profile.max_requeues)
        executor.update_parameters(timeout_min=profile.timeout_min, signal_delay_s=profile.signal_delay_s,
                                   tasks_per_node=profile.tasks_per_node, gpus_per_node=profile.gpus_per_node,
                                   setup=list(profile.setup))
        return executor
    if not shutil.which("sbatch"):
        raise UserError("backend 'slurm' needs sbatch on PATH (a Slurm login node); for a test cluster on this "
                        "machine run slurm/local_cluster.sh start and export SLURM_CONF as it prints")
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_python=profile.job_python,
                                     slurm_max_num_timeout=profile.max_requeues)
    params: dict[str, Any] = dict(name=job_name, timeout_min=profile.timeout_min, nodes=profile.nodes,
                                  tasks_per_node=profile.tasks_per_node, cpus_per_task=profile.cpus_per_task,
                                  slurm_signal_delay_s=profile.signal_delay_s,
                                  slurm_array_parallelism=max_parallel, slurm_setup=list(profile.setup))
    if profile.gpus_per_node:
        params["gpus_per_node"] = profile.gpus_per_node
    if profile.mem_gb:
        params["mem_gb"] = profile.mem_gb
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(profile, key):
            params[f"slurm_{key}"] = getattr(profile, key)
    extra = dict(profile.additional_parameters)
    if after:  # start only once every job named finished well; a failed one cancels this job
        extra.update(dependency=f"afterok:{':'.join(after)}", kill_on_invalid_dep="yes")
    if extra:
        params["slurm_additional_parameters"] = extra
    executor.update_parameters(**params)
    return executor


def submit(configs: Sequence[RunConfig], *, backend: str, sweep_dir: str | os.PathLike,
           cluster: str | os.PathLike | ClusterProfile | None = None, max_parallel: int | None = None,
           retry_failed: bool = False, job_fn: str = DEFAULT_JOB_FN, verbose: bool = True,
           after: Sequence[str] = (), max_attempts: int | None = None,
           allow_other_version: bool = False, out: TextIO | None = None) -> SubmitReport:
    """Submit every config that is not done, pending or running; return what happened.

    A run whose final.json exists is never submitted again; one pending or running (or being
    submitted by another process right now) is not submitted twice; a failed one is submitted
    again only with ``retry_failed=True``; otherwise its error (the tail of its log) is printed.
    ``max_parallel`` caps how many runs train at once (Slurm: the array's ``%`` limit; local:
    slots; default: the profile's ``array_parallelism`` on Slurm, 1 locally).
    ``after`` (Slurm only): job ids the submitted jobs wait for (``afterok``; when one of them
    fails, Slurm cancels the waiting jobs): how :mod:`avsf.grid` queues a transfer row behind
    the run it starts from.

    Refused before anything is queued (a UserError saying what to do): a sweep directory that
    cannot be created or written (a read-only or unmounted share), and unfinished runs there
    that another code version submitted (:func:`code_version`; resuming them with this code
    would mix two versions in one run: pass ``allow_other_version=True`` to take them over).
    Finished runs of other versions are reused and named in the report. A failed run is given
    up after ``max_attempts`` failed attempts (default: the profile's, 3): it stays failed
    with its reason however often it is submitted, until ``max_attempts`` is raised.

    With ``verbose``, the summary line and the errors of failed runs not retried go to ``out``
    (default :func:`avsf.console.status_stream`: stderr on the command line, stdout in a
    notebook, where stderr is drawn as an error).
    """
    from filelock import FileLock, Timeout

    check_backend(backend)
    after = [str(j) for j in after]
    if after and backend != "slurm":
        raise UserError(f"job dependencies (after={after}) need the slurm backend; on {backend!r} submit "
                        f"the runs that depend on others after those finished")
    profile = cluster if isinstance(cluster, ClusterProfile) else load_cluster(cluster)
    if max_parallel is None:
        max_parallel = profile.array_parallelism if backend == "slurm" else 1
    if not isinstance(max_parallel, int) or max_parallel < 1:
        raise UserError(f"max_parallel={max_parallel!r} must be a positive integer")
    max_attempts = profile.max_attempts if max_attempts is None else max_attempts
    if not isinstance(max_attempts, int) or max_attempts < 1:
        raise UserError(f"max_attempts={max_attempts!r} must be a positive integer")
    sweep_dir = Path(sweep_dir).resolve()
    check_sweep_dir(sweep_dir)

    run_dirs: dict[Path, RunConfig] = {}
    for cfg in configs:
        if not isinstance(cfg, RunConfig):
            raise UserError(f"submit() takes RunConfig objects, got {type(cfg).__name__}")
        run_dirs.setdefault(run_dir_for(cfg, sweep_dir), cfg)
    report = SubmitReport()
    report.other_version = check_versions(run_dirs, allow_other_version=allow_other_version)
    locks: list[Any] = []
    claimed: list[Path] = []
    try:
        queue: dict[str, str] | None | bool = False
        if backend == "slurm" or any((d / "launch.json").exists() for d in run_dirs):
            ids = [str((_read_json(d / "launch.json") or {}).get("job_id") or "") for d in run_dirs]
            slurm_ids = [j for j in ids if j and not j.startswith("debug-")]
            queue = _slurm_queue(slurm_ids) if shutil.which("squeue") and slurm_ids else {}
        for run_dir, cfg in run_dirs.items():
            run_dir.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(run_dir / ".claim.lock"))
            try:
                lock.acquire(timeout=0)
            except Timeout:
                report.active.append(str(run_dir))  # another process is submitting it right now
                continue
            locks.append(lock)
            existing = (_read_json(run_dir / "launch.json") or {}).get("config")
            if existing is not None and RunConfig.from_dict(existing).config_hash() != cfg.config_hash():
                raise UserError(f"{run_dir}/launch.json holds a different config than its name says; "
                                f"move that directory away and submit again")
            if existing is not None and existing != cfg.to_dict():
                repoint(run_dir, cfg)  # the same run, made at other paths (a clone, a moved sweep)
            st = run_state(run_dir, queue=queue, claim_held=False) if (run_dir / "launch.json").exists() \
                or (run_dir / "final.json").exists() else {"state": "new"}
            if st["state"] == "done":
                report.done.append(str(run_dir))
                continue
            if st["state"] in ("pending", "running"):
                report.active.append(str(run_dir))
                continue
            previous = _read_json(run_dir / "launch.json") or {}
            failures = list(previous.get("failures", []))
            if st["state"] == "failed" and not previous.get("gave_up"):
                failures.append({"at": _now(), "reason": st["reason"]})  # counted once, when next submitted
            if st["state"] == "failed" and not retry_failed:
                report.failed[str(run_dir)] = st["error"]
                continue
            if st["state"] == "failed" and len(failures) >= max_attempts:
                gave_up = give_up_reason(failures, max_attempts=max_attempts)
                _write_json(run_dir / "launch.json", {**previous, "failures": failures, "gave_up": gave_up})
                report.failed[str(run_dir)] = gave_up
                continue
            # Claim: config and a launch record without a job id, before anything is queued.
            (run_dir / "state.json").unlink(missing_ok=True)
            _write_json(run_dir / "launch.json", {
                "backend": backend, "job_id": None, "submissions": int(previous.get("submissions", 0)) + 1,
                "claimed_at": _now(), "host": socket.gethostname(), "pid": os.getpid(), "user": _user(),
                "avsf_version": code_version(), "cluster": profile.name, "mem_gb": profile.mem_gb,
                "job_fn": job_fn, "config": cfg.to_dict(), "failures": failures,
                **({"after": after} if after else {})})
            claimed.append(run_dir)
        _launch(claimed, backend=backend, sweep_dir=sweep_dir, profile=profile, max_parallel=max_parallel,
                job_fn=job_fn, report=report, after=after)
    finally:
        for lock in locks:
            lock.release()
    if verbose:
        report.show(sweep_dir, out=out)
    return report


def _launch(run_dirs: list[Path], *, backend: str, sweep_dir: Path, profile: ClusterProfile, max_parallel: int,
            job_fn: str, report: SubmitReport, after: Sequence[str] = ()) -> None:
    """Queue the claimed runs and record their job ids in launch.json."""
    if not run_dirs:
        return
    if backend == "debug":
        for run_dir in run_dirs:
            launch = _read_json(run_dir / "launch.json")
            _write_json(run_dir / "launch.json", {**launch, "job_id": f"debug-{os.getpid()}"})
            report.submitted.append(str(run_dir))
            try:
                RunJob(run_dir=str(run_dir), job_fn=job_fn)()
            except Exception:  # recorded in state.json; the sweep goes on
                pass
        return
    folder = sweep_dir / SUBMITIT_DIR / "%j"
    executor = _make_executor(backend=backend, folder=folder, profile=profile, max_parallel=max_parallel,
                              job_name=sweep_dir.name, after=after)
    slots = str(sweep_dir / SLOTS_DIR) if backend == "local" else None
    jobs_fns = [RunJob(run_dir=str(d), job_fn=job_fn, slots_dir=slots, max_parallel=max_parallel if slots else 0)
                for d in run_dirs]
    try:
        if backend == "slurm":
            with executor.batch():  # one job array; its % cap is max_parallel
                jobs = [executor.submit(fn) for fn in jobs_fns]
        else:
            jobs = [executor.submit(fn) for fn in jobs_fns]
    except Exception as e:
        message = f"submission to {backend} failed: {type(e).__name__}: {e}"
        for run_dir in run_dirs:
            launch = _read_json(run_dir / "launch.json")
            _write_json(run_dir / "launch.json", {**launch, "submit_error": message})
        raise UserError(message) from e
    for run_dir, job in zip(run_dirs, jobs):
        launch = _read_json(run_dir / "launch.json")
        _write_json(run_dir / "launch.json", {**launch, "job_id": str(job.job_id), "submitted_at": _now(),
                                              "stdout": str(job.paths.stdout), "stderr": str(job.paths.stderr)})
        report.submitted.append(str(run_dir))
        report.jobs.append(str(job.job_id))


# --- status and collection --------------------------------------------------------------
def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = tuple(v) if isinstance(v, list) else v
    return out


def _metrics(final: dict[str, Any] | None) -> dict[str, Any]:
    """The scalar numbers at final.json's top level (top1, top5 or map, params, gflops, ...);
    per-class tables stay in the file."""
    if not final:
        return {}
    return {k: v for k, v in final.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def run_dirs_of(sweep_dir: str | os.PathLike) -> list[Path]:
    """Run directories of a sweep (those with a launch.json), sorted by name."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise UserError(f"sweep directory {sweep_dir} does not exist (submit a sweep there first)")
    return sorted(p.parent for p in sweep_dir.glob("*/launch.json"))


def status(sweep_dir: str | os.PathLike, *, runs: Iterable[str] | None = None) -> "pd.DataFrame":
    """One row per run of the sweep: run, state, job_id, attempts, error, reason (a failed
    run's error in one line), the config's fields (flattened: ``model.droppathway_rate``...)
    and final.json's scalar metrics. ``runs``: only these run directory names (a grid's runs
    in a sweep dir that other grids share).

    Returns a pandas DataFrame (empty, with the state columns, when no run exists yet).
    """
    import pandas as pd

    dirs = run_dirs_of(sweep_dir)
    if runs is not None:
        wanted = set(runs)
        dirs = [d for d in dirs if d.name in wanted]
    launches = [_read_json(d / "launch.json") or {} for d in dirs]
    slurm_ids = [str(l.get("job_id")) for l in launches if l.get("backend") == "slurm" and l.get("job_id")]
    queue = _slurm_queue(slurm_ids) if slurm_ids and shutil.which("squeue") else ({} if not slurm_ids else None)
    rows = []
    for d, launch in zip(dirs, launches):
        st = run_state(d, queue=queue)
        cfg = launch.get("config") or {}
        row = {"run": d.name, "state": st["state"], "job_id": st["job_id"], "backend": st["backend"],
               "attempts": st["attempts"], "submissions": st["submissions"], "failures": st["failures"],
               "note": st["note"],
               "error": st["error"] if st["state"] == "failed" else "",
               "reason": st["reason"] if st["state"] == "failed" else ""}
        row.update(_flatten(cfg))
        row.update({f"metric.{k}": v for k, v in _metrics(_read_json(d / "final.json")).items()})
        rows.append(row)
    columns = ["run", "state", "job_id", "backend", "attempts", "submissions", "failures", "note", "error", "reason"]
    return pd.DataFrame(rows, columns=None if rows else columns)


def varying_config_columns(frame: "pd.DataFrame") -> list[str]:
    """Config columns whose value differs between the runs (what a sweep varies), plus name and seed."""
    cfg_cols = [c for c in frame.columns if c.startswith(("model.", "data.", "solver.")) or
                c in ("device", "bf16", "checkpoint_every", "keep_checkpoints", "eval_every", "log_every")]
    varying = [c for c in cfg_cols if frame[c].astype(str).nunique() > 1]
    return [c for c in ("name", "seed") if c in frame.columns] + varying


def wait(sweep_dir: str | os.PathLike, *, timeout_s: float | None = 3600.0, poll_s: float = 2.0,
         on_poll: Callable[["pd.DataFrame"], None] | None = None,
         runs: Iterable[str] | None = None) -> "pd.DataFrame":
    """Poll :func:`status` until no run is pending or running; return the final table.

    ``on_poll(frame)`` is called after every poll (progress lines; tests use it to play the
    cluster admin). ``runs``: wait for these run directory names only (see :func:`status`).
    Raises TimeoutError naming the unfinished runs after ``timeout_s`` (None: no limit).
    """
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    runs = None if runs is None else list(runs)
    while True:
        frame = status(sweep_dir, runs=runs)
        if on_poll is not None:
            on_poll(frame)
        active = frame[frame["state"].isin(["pending", "running"])] if len(frame) else frame
        if not len(active):
            return frame
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"{len(active)} run(s) still pending/running after {timeout_s:.0f} s: "
                               f"{', '.join(active['run'])}")
        time.sleep(poll_s)
