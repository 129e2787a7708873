"""The grid runner: one door for every grid of runs, used by ``avsf sweep`` and the notebooks.

A grid is an experiment's (row, seed) cells at one scale. :func:`build_grid` builds its entries
once, with the overrides entering every config before it is hashed and before a transfer row's
``model.init_from`` names the run it starts from, so the two always agree.
:func:`run_grid` then

1. builds the derived data the runs read (:func:`avsf.experiments.prepare_data`: the EPIC,
   Charades, UCF101/HMDB51 and pretraining views, the synthetic AVA data), once, in this
   process: the dataset resolution of each run finds it complete and writes nothing again;
2. submits through :func:`avsf.launch.submit` in dependency order. A run whose ``init_from``
   names another run of the grid (Table 7's detectors, Table 8's transfer rows) goes after that
   run. On Slurm every level is queued at once, each job waiting (``afterok``) for the jobs it
   starts from, so one command queues the whole table and the user can log out; a run whose
   source fails is cancelled by Slurm. On the local and debug backends the levels go in order:
   the runner waits for one level before it submits the next. A run whose source failed is not
   submitted ("not run");
3. waits, when asked, through :func:`avsf.launch.wait`, showing progress (:class:`GridProgress`:
   a bar with done / running / failed and an ETA, tqdm's widget in a notebook, one line per
   change in a log) and naming each failed run with its reason as soon as it is seen;
4. returns a :class:`GridOutcome`: each run's state and, for each failed one, its reason in one line.

``rows`` (``avsf sweep NAME --rows A,B``) picks cells: :func:`select_rows` adds the rows they
need (the row a transfer or detector row starts from, an ensemble's members). Finished runs are
never trained again (the launcher's cache), so an added row that is done costs nothing.
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence, TextIO

from avsf import launch
from avsf.config import RunConfig
from avsf.console import in_notebook, is_terminal, status_stream, widgets_available
from avsf.errors import UserError
from avsf.experiments import (Experiment, GridEntry, check_scale, check_seeds, get_experiment, get_grid_entries,
                              prepare_data)

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_SEEDS = (0, 1, 2)  # the notebooks' default: three seeds, the fewest for a verdict
DEFAULT_MAX_PARALLEL = 2  # runs training at once (local: processes; Slurm: each job array's cap)
DEFAULT_POLL_S = 2.0
NOT_RUN = "not run"  # the state of a run whose source run failed: never submitted


@dataclass(frozen=True)
class GridRun:
    """One run of a grid: a distinct config (cells that share a config share the run)."""

    name: str  # run directory name
    config: RunConfig = field(repr=False)
    after: tuple[str, ...] = ()  # names of the grid's runs it starts from (its model.init_from)


@dataclass
class Grid:
    """An experiment's entries at one scale, and their distinct runs in dependency order."""

    experiment: str
    entries: list[GridEntry]
    runs: list[GridRun]

    @classmethod
    def from_entries(cls, experiment: str, entries: Sequence[GridEntry]) -> "Grid":
        """The runs of ``entries``; a run's ``after`` is the run of this grid that its
        ``model.init_from`` names (a relative ``<name>-<hash>``, as the experiments write it)."""
        configs: dict[str, RunConfig] = {}
        for e in entries:
            configs.setdefault(launch.run_name(e.config), e.config)
        runs = [GridRun(name, cfg, tuple(p for p in [cfg.model.init_from] if p in configs and p != name))
                for name, cfg in configs.items()]
        grid = cls(experiment, list(entries), runs)
        grid.runs = [r for level in grid.levels() for r in level]  # every source before its dependents
        return grid

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.runs]

    @property
    def configs(self) -> list[RunConfig]:
        return [r.config for r in self.runs]

    def levels(self) -> list[list[GridRun]]:
        """The runs by depth: level 0 starts from no run of the grid, level k from runs of
        levels below k; each level keeps the grid's order."""
        by_name = {r.name: r for r in self.runs}
        depth: dict[str, int] = {}

        def level_of(name: str, seen: tuple[str, ...] = ()) -> int:
            if name in seen:
                raise UserError(f"runs {' -> '.join(seen + (name,))} start from each other (model.init_from)")
            if name not in depth:
                depth[name] = 1 + max((level_of(p, seen + (name,)) for p in by_name[name].after), default=-1)
            return depth[name]

        out: list[list[GridRun]] = []
        for r in self.runs:
            k = level_of(r.name)
            out += [[] for _ in range(k + 1 - len(out))]
            out[k].append(r)
        return out


def select_rows(exp: Experiment | str, rows: Sequence[str], *, scale: str) -> list[str]:
    """The row keys ``rows`` names plus the rows they need, in the table's order: the row a
    transfer or detector row starts from (``init_row``, recursively) and an ensemble's members.
    UserError naming the valid rows for a key the experiment lacks at this scale."""
    exp = get_experiment(exp) if isinstance(exp, str) else exp
    at_scale = {r.key: r for r in exp.rows_at(scale)}
    keys = [k.strip() for k in rows if k.strip()]
    if not keys:
        raise UserError(f"--rows names no row; rows of {exp.name} at scale {scale}: {', '.join(at_scale)}")
    for k in keys:
        if k not in at_scale:
            other = next((r for r in exp.rows if r.key == k), None)
            where = (f"row {k!r} runs only at scale {', '.join(other.scales)}" if other else
                     f"{exp.name} has no row {k!r}")
            raise UserError(f"{where}; rows of {exp.name} at scale {scale}: {', '.join(at_scale)}")
    wanted: set[str] = set()

    def add(key: str) -> None:
        if key in wanted:
            return
        wanted.add(key)
        row = at_scale[key]
        for dep in (*row.members, *([row.init_row] if row.init_row else [])):
            add(dep)

    for k in keys:
        add(k)
    return [k for k in at_scale if k in wanted]


def build_grid(name: str, *, scale: str, seeds: Sequence[int] | str = DEFAULT_SEEDS,
               data_roots: dict[str, str | None] | None = None, overrides: Sequence[str] = (),
               rows: Sequence[str] | None = None) -> Grid:
    """The grid of experiment ``name`` at ``scale`` (every row, or ``rows`` and what they need)."""
    exp = get_experiment(name)
    check_scale(scale)
    keys = None if rows is None else select_rows(exp, rows, scale=scale)
    entries = get_grid_entries(exp.name, scale=scale, seeds=check_seeds(seeds), data_roots=data_roots,
                               overrides=list(overrides), rows=keys)
    return Grid.from_entries(exp.name, entries)


# --- running a grid -----------------------------------------------------------------------------
@dataclass
class GridOutcome:
    """What :func:`run_grid` saw last: each run's state and each failed run's one-line reason."""

    grid: Grid
    sweep_dir: Path
    states: dict[str, str]  # run name -> pending / running / done / failed / "not run"
    failures: dict[str, str]  # run name -> reason (failed and not-run runs)

    @property
    def done(self) -> bool:
        return all(s == "done" for s in self.states.values())

    def failure_lines(self) -> list[str]:
        return [f"{name}: {reason}" for name, reason in self.failures.items()]

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for s in self.states.values():
            counts[s] = counts.get(s, 0) + 1
        return ", ".join(f"{n} {s}" for s, n in counts.items()) or "no runs"


PROGRESS_KINDS = ("widget", "bar", "lines")


def progress_kind(out: TextIO) -> str:
    """How :class:`GridProgress` draws on ``out``: "widget" (tqdm's notebook bar) in a Jupyter
    kernel with ipywidgets, "bar" (a text bar redrawn in place) on a terminal or in a kernel
    without widgets, "lines" (one line per change) elsewhere: a log file or CI, where a
    redrawn bar would leave a line per redraw."""
    in_kernel = in_notebook() and out is sys.stdout
    if in_kernel and widgets_available():
        return "widget"
    return "bar" if in_kernel or is_terminal(out) else "lines"


def eta_s(*, total: int, finished: int, initial: int, elapsed_s: float) -> float | None:
    """Seconds left, extrapolated from the runs finished since the wait began (``initial`` were
    finished already: reused runs say nothing about the speed); None before one has."""
    if finished <= initial or elapsed_s <= 0:
        return None
    return (total - finished) * elapsed_s / (finished - initial)


def _clock(seconds: float | None) -> str:
    from tqdm import tqdm  # noqa: PLC0415

    return "?" if seconds is None else tqdm.format_interval(max(0.0, seconds))


class GridProgress:
    """The ``on_poll`` of :func:`avsf.launch.wait`: the grid's progress while its runs train.

    Counts runs finished (done, failed or not run) out of the grid's, with done / running /
    failed and an ETA (:func:`eta_s`) beside them; a run seen failed for the first time is
    named with its one-line reason at once. Drawn as :func:`progress_kind` says; :meth:`close`
    leaves one summary line (in a notebook it replaces the widget, so a saved notebook shows it).
    """

    def __init__(self, *, label: str, total: int, not_run: dict[str, str], out: TextIO,
                 kind: str | None = None) -> None:
        self.label, self.total, self.not_run, self.out = label, total, not_run, out
        self.kind = kind or progress_kind(out)
        if self.kind not in PROGRESS_KINDS:
            raise ValueError(f"progress kind {self.kind!r}: choose one of {', '.join(PROGRESS_KINDS)}")
        self.start = time.monotonic()
        self.initial: int | None = None  # finished at the first poll
        self.first_poll = self.start  # the ETA's clock starts there (after data preparation)
        self.counts: dict[str, int] = {}
        self.seen_failed: set[str] = set()
        self.bar = None  # tqdm, made at the first poll
        self.handle = None  # the widget's display handle
        self.last = ""

    def write(self, line: str) -> None:
        """A status line that does not break the bar."""
        if self.kind == "bar" and self.bar is not None:
            self.bar.write(line, file=self.out)
            self.out.flush()
        else:
            print(line, file=self.out, flush=True)

    @contextlib.contextmanager
    def above(self) -> Iterator[None]:
        """Lines others print meanwhile (the launcher's) land above a text bar, not inside it."""
        if self.kind == "bar" and self.bar is not None:
            with self.bar.external_write_mode(file=self.out):
                yield
        else:
            yield

    def finished(self) -> int:
        return self.counts.get("done", 0) + self.counts.get("failed", 0) + len(self.not_run)

    def postfix(self) -> str:
        c = self.counts
        parts = [f"done {c.get('done', 0)}", f"running {c.get('running', 0)}", f"failed {c.get('failed', 0)}"]
        if c.get("pending"):
            parts.insert(1, f"pending {c['pending']}")
        if self.not_run:
            parts.append(f"not run {len(self.not_run)}")
        left = eta_s(total=self.total, finished=self.finished(), initial=self.initial or 0,
                     elapsed_s=time.monotonic() - self.first_poll)
        return ", ".join(parts) + ("" if self.finished() >= self.total else f", ETA {_clock(left)}")

    def __call__(self, frame: "pd.DataFrame") -> None:
        self.counts = frame["state"].value_counts().to_dict() if len(frame) else {}
        if len(frame):
            for run, reason in frame.loc[frame["state"] == "failed", ["run", "reason"]].itertuples(index=False):
                if run not in self.seen_failed:
                    self.seen_failed.add(run)
                    self.write(f"[{self.label}] failed: {run}: {reason}")
        if self.initial is None:
            self.initial, self.first_poll = self.finished(), time.monotonic()
        if self.kind == "lines":
            line = f"[{self.label}] {self.finished()}/{self.total} runs finished, {self.postfix()}"
            if line != self.last:
                print(f"{line} ({time.monotonic() - self.start:.0f} s)", file=self.out, flush=True)
                self.last = line
            return
        if self.bar is None:
            self.bar = self._make_bar()
        self.bar.n = self.finished()
        self.bar.set_postfix_str(self.postfix(), refresh=False)
        self.bar.refresh()

    def _make_bar(self):
        fmt = "{desc} {n_fmt}/{total_fmt} runs finished |{bar}| {elapsed}{postfix}"
        options = dict(total=self.total, initial=self.finished(), desc=f"[{self.label}]", bar_format=fmt,
                       leave=False, dynamic_ncols=True, mininterval=0)
        if self.kind == "bar":
            from tqdm import tqdm  # noqa: PLC0415

            return tqdm(file=self.out, **options)
        from IPython.display import display  # noqa: PLC0415
        from tqdm.notebook import tqdm as notebook_tqdm  # noqa: PLC0415

        bar = notebook_tqdm(display=False, **options)
        self.handle = display(bar.container, display_id=True)
        return bar

    def summary(self) -> str:
        c = self.counts
        line = (f"[{self.label}] {self.finished()}/{self.total} runs finished in "
                f"{_clock(time.monotonic() - self.start)}: done {c.get('done', 0)}, failed {c.get('failed', 0)}")
        return line + (f", not run {len(self.not_run)}" if self.not_run else "")

    def close(self) -> None:
        """End the bar and leave the summary line (nothing when no poll happened, nor in "lines"
        mode, whose last line says it all)."""
        if self.initial is None or self.kind == "lines":
            return
        if self.bar is not None:  # leave=False: a text bar clears its line for the summary
            self.bar.close()
        if self.handle is not None:  # the widget's place shows the summary, live and in the saved notebook
            self.handle.update({"text/plain": self.summary()}, raw=True)
        else:
            print(self.summary(), file=self.out, flush=True)


def _states(sweep_dir: Path, names: Sequence[str]) -> "pd.DataFrame":
    frame = launch.status(sweep_dir, runs=names) if names else None
    return frame.set_index("run") if frame is not None and len(frame) else None


def _submission_groups(level: list[GridRun], states: "pd.DataFrame | None", *, not_run: dict[str, str],
                       retry_failed: bool) -> dict[tuple[str, ...], list[RunConfig]]:
    """The configs of ``level`` to hand to the launcher, grouped by the Slurm job ids they wait
    for; a run whose source failed or was not run is recorded in ``not_run`` instead."""
    def state(name: str):
        return states.loc[name] if states is not None and name in states.index else None

    groups: dict[tuple[str, ...], list[RunConfig]] = {}
    for r in level:
        own = state(r.name)
        after: list[str] = []
        if own is None or (own["state"] == "failed" and retry_failed):  # the launcher will submit it
            for p in r.after:  # where do the runs it starts from stand?
                src = state(p)
                if p in not_run or src is None or src["state"] == "failed":
                    why = "was not run" if p in not_run or src is None else f"failed ({src['reason']})"
                    not_run[r.name] = f"{NOT_RUN}: it starts from {p}, which {why}"
                    break
                if src["state"] != "done":  # only on Slurm: the local backends waited for it
                    if not src["job_id"]:  # another process is submitting it right now
                        not_run[r.name] = f"{NOT_RUN}: it starts from {p}, which is being submitted; run again"
                        break
                    after.append(str(src["job_id"]))
        if r.name not in not_run:
            groups.setdefault(tuple(after), []).append(r.config)
    return groups


def run_grid(grid: Grid, *, backend: str, sweep_dir: str | Path, cluster: str | Path | launch.ClusterProfile | None = None,
             max_parallel: int = DEFAULT_MAX_PARALLEL, retry_failed: bool = False,
             job_fn: str = launch.DEFAULT_JOB_FN, wait: bool = True, timeout_s: float | None = None,
             poll_s: float = DEFAULT_POLL_S, label: str | None = None, out: TextIO | None = None,
             max_attempts: int | None = None, allow_other_version: bool = False) -> GridOutcome:
    """Submit every run of ``grid`` not finished yet, in dependency order (module docstring),
    and with ``wait`` wait until each one is done or failed. Runs already done, pending or
    running are not submitted again; failed ones only with ``retry_failed`` (and fewer than
    ``max_attempts`` failures; see :func:`avsf.launch.submit`, as for ``allow_other_version``). The local and
    debug backends wait for each level that a later one starts from, whatever ``wait`` says.

    Returns the :class:`GridOutcome` (it raises nothing for failed runs: the caller decides);
    TimeoutError after ``timeout_s`` (None: no limit) with runs still pending or running.
    Progress goes to ``out`` (default :func:`avsf.console.status_stream`: stderr, or stdout in a
    notebook), as :class:`GridProgress` draws it, each line starting with ``[label]``; the
    launcher's summary lines go there too. The debug backend, which trains inside the
    launcher's call, gets one run per call so that the progress moves between runs.
    """
    launch.check_backend(backend)
    profile = cluster if isinstance(cluster, launch.ClusterProfile) else launch.load_cluster(cluster)
    sweep_dir = Path(sweep_dir).resolve()
    label = label or grid.experiment
    out = status_stream() if out is None else out
    levels = grid.levels()
    not_run: dict[str, str] = {}
    progress = GridProgress(label=label, total=len(grid.runs), not_run=not_run, out=out)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s

    def wait_for(names: list[str]) -> None:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        launch.wait(sweep_dir, runs=names, timeout_s=left, poll_s=poll_s, on_poll=progress)

    def submit(configs: list[RunConfig], after: tuple[str, ...]) -> None:
        options = dict(backend=backend, sweep_dir=sweep_dir, cluster=profile, max_parallel=max_parallel,
                       retry_failed=retry_failed, job_fn=job_fn, after=after, max_attempts=max_attempts,
                       allow_other_version=allow_other_version)
        if backend != "debug":
            with progress.above():
                launch.submit(configs, **options, out=out)
            return
        # the debug backend trains inside submit, in this process: one run per call, with a poll
        # before each, keeps the bar moving; one summary for them all
        report = launch.SubmitReport()
        names = submitted + [launch.run_name(c) for c in configs]
        for cfg in configs:
            progress(launch.status(sweep_dir, runs=names))
            report.merge(launch.submit([cfg], **options, verbose=False))
        with progress.above():
            report.show(sweep_dir, out=out)

    if grid.runs:
        launch.check_sweep_dir(sweep_dir)  # before the data is prepared: a read-only share fails fast
        prepare_data(grid.configs)
    submitted: list[str] = []
    try:
        for k, level in enumerate(levels):
            sources = sorted({p for r in level for p in r.after})
            groups = _submission_groups(level, _states(sweep_dir, sources + [r.name for r in level]),
                                        not_run=not_run, retry_failed=retry_failed)
            for after, configs in groups.items():
                submit(configs, after)
            submitted += [r.name for r in level if r.name not in not_run]
            if backend != "slurm" and k + 1 < len(levels):  # the next level starts from this one's runs
                progress.write(f"[{label}] {sum(len(lv) for lv in levels[k + 1:])} run(s) start from runs of this "
                               f"grid: waiting for those first")
                wait_for(submitted)
        if wait and submitted:
            wait_for(submitted)
    finally:
        progress.close()
    return outcome(grid, sweep_dir)


def outcome(grid: Grid, sweep_dir: str | Path) -> GridOutcome:
    """Where ``grid`` stands in ``sweep_dir``, from the run files and the scheduler: each run's
    state and each failed run's one-line reason. A run whose source run failed was never
    submitted (local, debug) or was cancelled by Slurm: its state is "not run"; a run without a
    directory whose sources did not fail is "not submitted"."""
    sweep_dir = Path(sweep_dir).resolve()
    states = _states(sweep_dir, grid.names) if sweep_dir.is_dir() else None
    by_name = {r.name: r for r in grid.runs}
    out_states: dict[str, str] = {}
    failures: dict[str, str] = {}
    for r in grid.runs:  # in dependency order: a source's state is known before its dependents'
        row = states.loc[r.name] if states is not None and r.name in states.index else None
        state = "not submitted" if row is None else str(row["state"])
        source = next((p for p in by_name[r.name].after if out_states.get(p) in ("failed", NOT_RUN)), None)
        if source is not None and (row is None or (state == "failed" and not row["attempts"])):
            state, failures[r.name] = NOT_RUN, f"{NOT_RUN}: it starts from {source}, which failed ({failures[source]})"
        elif state == "failed":
            failures[r.name] = str(row["reason"])
        out_states[r.name] = state
    return GridOutcome(grid=grid, sweep_dir=sweep_dir, states=out_states, failures=failures)
