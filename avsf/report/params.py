"""A notebook's parameters, checked before anything is submitted."""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from avsf.errors import UserError
from avsf.experiments import SCALES, Experiment, check_seeds, get_experiment, project_root
from avsf.grid import DEFAULT_MAX_PARALLEL, DEFAULT_SEEDS, Grid, build_grid

BACKENDS = ("debug", "local", "slurm")


@dataclass
class Params:
    """A notebook's validated parameters."""

    notebook: str
    backend: str
    cluster: str | None
    scale: str
    seeds: list[int]
    data_roots: dict[str, str | None]
    output_dir: Path
    sweep_dir: Path
    max_parallel: int = DEFAULT_MAX_PARALLEL
    overrides: list[str] = field(default_factory=list)
    # render the table from its results folder alone (runs/, runs.csv, provenance.json): nothing
    # is trained or submitted, the sweep dir is the archive (avsf.report.archive.render_only)
    render_only: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    # the grid, built once by validate_parameters with the overrides (None: built on first use)
    built_grid: Grid | None = field(default=None, repr=False, compare=False)

    @property
    def experiment(self) -> Experiment:
        return get_experiment(self.notebook)

    @property
    def grid(self) -> Grid:
        """The notebook's grid (:func:`avsf.grid.build_grid`) at these parameters."""
        if self.built_grid is None:
            self.built_grid = build_grid(self.notebook, scale=self.scale, seeds=self.seeds,
                                         data_roots=self.data_roots, overrides=self.overrides)
        return self.built_grid


def injected_parameter_names(history: list[str] | None) -> list[str]:
    """Names assigned in papermill's injected cell (its source starts with ``# Parameters``),
    read from the kernel's input history (IPython's ``In``); [] when nothing was injected."""
    names: list[str] = []
    for source in history or []:
        if not isinstance(source, str) or not source.lstrip().startswith("# Parameters"):
            continue
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        names = [t.id for node in tree.body if isinstance(node, ast.Assign)
                 for t in node.targets if isinstance(t, ast.Name)]
    return names


def _check_choice(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise UserError(f"parameter {name}={value!r} is not allowed; choose one of {', '.join(map(str, allowed))}")


def validate_parameters(namespace: dict[str, Any], *, notebook: str, declared: list[str] | tuple[str, ...],
                        history: list[str] | None = None) -> Params:
    """Check a notebook's parameters before anything is submitted.

    Args:
        namespace: the notebook's globals after the parameters (and injected) cells.
        notebook: the experiment name (the notebook's name).
        declared: the names the ``parameters`` cell declares.
        history: the kernel's input history (``In``): papermill's injected cell is found in it,
            and any name it sets that ``declared`` lacks is refused (papermill only warns).
    Raises:
        UserError naming the declared parameters, the allowed values or the missing path.
    """
    get_experiment(notebook)
    unknown = [n for n in injected_parameter_names(history) if n not in declared]
    if unknown:
        raise UserError(f"unknown parameter(s) {', '.join(unknown)} for {notebook}; "
                        f"declared parameters: {', '.join(declared)}")
    missing = [n for n in declared if n not in namespace]
    if missing:
        raise UserError(f"parameters cell did not set {', '.join(missing)}")
    ns = {n: namespace[n] for n in declared}
    _check_choice("backend", ns.get("backend", "local"), BACKENDS)
    scale = ns.get("scale", "smoke")
    _check_choice("scale", scale, SCALES)
    cluster = ns.get("cluster") or None
    if ns.get("backend") == "slurm" and not cluster:
        raise UserError("backend='slurm' needs a cluster profile: set cluster (e.g. 'local' for the "
                        "test cluster, or the name of a profile in slurm/)")
    seeds = check_seeds(ns.get("seeds", list(DEFAULT_SEEDS)))
    roots = {}
    for key, value in ns.items():
        if key.startswith("data_root_"):
            dataset = key[len("data_root_"):]
            if value:
                path = Path(str(value)).expanduser()
                path = path if path.is_absolute() else project_root() / path
                if not path.exists():
                    raise UserError(f"parameter {key}={value!r}: no such folder {path}; give an "
                                    f"existing dataset folder, or None for the built-in data")
                roots[dataset] = str(path)
            else:
                roots[dataset] = None
    overrides = ns.get("overrides", []) or []
    if isinstance(overrides, str):
        overrides = [overrides]
    if not isinstance(overrides, (list, tuple)) or not all(isinstance(o, str) and "=" in o for o in overrides):
        raise UserError(f"parameter overrides={overrides!r} must be a list of 'section.key=value' strings, "
                        f"e.g. ['solver.epochs=2']")
    max_parallel = ns.get("max_parallel", DEFAULT_MAX_PARALLEL)
    if isinstance(max_parallel, bool) or not isinstance(max_parallel, int) or max_parallel < 1:
        raise UserError(f"parameter max_parallel={max_parallel!r} must be a positive integer")
    render_only = ns.get("render_only", False)
    if not isinstance(render_only, bool):
        raise UserError(f"parameter render_only={render_only!r} must be True or False")
    default_out = f"results/{notebook}" if scale == "smoke" else f"results/{notebook}/{scale}"
    out = Path(str(ns.get("output_dir") or default_out)).expanduser()
    sweep = Path(str(ns.get("sweep_dir") or "sweeps")).expanduser()
    root = project_root()
    params = Params(notebook=notebook, backend=ns.get("backend", "local"), cluster=cluster, scale=scale,
                    seeds=seeds, data_roots=roots, max_parallel=max_parallel, overrides=list(overrides),
                    output_dir=out if out.is_absolute() else root / out,
                    sweep_dir=sweep if sweep.is_absolute() else root / sweep,
                    extra={k: v for k, v in ns.items() if k not in ("backend", "cluster", "scale", "seeds",
                                                                   "output_dir", "sweep_dir", "max_parallel",
                                                                   "overrides", "render_only")
                           and not k.startswith("data_root_")})
    if render_only:  # no grid to build: the archive holds the runs (and no data is needed)
        from avsf.report.archive import render_only as archived  # noqa: PLC0415 (archive builds on this module)

        return archived(params)
    # built now: every config (and the paper scale's data roots) is checked before anything is
    # submitted, and submit_and_wait runs this grid, not a second copy
    params.built_grid = build_grid(notebook, scale=scale, seeds=seeds, data_roots=roots, overrides=overrides)
    return params
