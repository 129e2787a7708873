"""Machine-independent forms of the paths a run config and a run's records carry.

A run is named ``<name>-<config_hash>``; the hash must be the same on every machine and in
every clone, so it is taken of :func:`hash_form`, not of the config as given:

- ``data.synthetic_root`` (where the built-in dataset is generated) becomes ``<synthetic>``:
  the built-in data is identified by ``data.synthetic_version``, ``synthetic_scale`` and
  ``synthetic_seed`` (the generator is deterministic), wherever it is written.
- ``data.root``, ``data.split_dir``, ``data.ava_annotation_dir`` under the synthetic root become
  ``<synthetic>/<relative path>`` (the derived EPIC / Charades / UCF views); split and annotation
  folders under ``data.root`` become ``<root>/<relative path>``; any other absolute folder (a
  user's dataset) becomes ``<data>/<folder name>``: ``/mnt/a/kinetics400`` and
  ``~/kinetics400`` are the same data, ``kinetics400`` and ``kinetics600`` are not.
- ``model.init_from``: a relative name (a sibling run, the experiments' form) is kept; an
  absolute path is cut to the same form, from the run dir's name on
  (``/x/sweeps/R/checkpoints/c.pt`` -> ``R/checkpoints/c.pt``).

Relative paths are kept (lexically normalised): they are already portable. The form is
idempotent, so a config stored in its portable form (results/<nb>/runs/*/config.json) hashes
to the same run name. Host names and user names never enter a config, so nothing else changes.

:func:`scrub_paths` applies the same idea to any JSON record (final.json, metrics.jsonl):
every string that is an absolute path is rewritten against a list of :class:`Anchor` s.
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Iterable

SYNTHETIC = "<synthetic>"  # the built-in dataset's root
DATA = "<data>"  # a user dataset's parent folder (machine-specific, dropped)
ROOT = "<root>"  # the run's data.root (for folders below it)
HOME = "<home>"  # the user's home
PATH = "<path>"  # an absolute path under no anchor: only its last component is kept
CHECKPOINTS = "checkpoints"  # the engine's checkpoint folder inside a run dir

# config fields that hold a folder or file: (section, key)
DATA_PATH_FIELDS = ("root", "split_dir", "ava_annotation_dir")
PATH_FIELDS = (*(("data", k) for k in (*DATA_PATH_FIELDS, "synthetic_root")), ("model", "init_from"))


def is_absolute(text: str) -> bool:
    """Whether `text` names an absolute path here or elsewhere (POSIX, ``~``, Windows drive)."""
    return text.startswith(("/", "~")) or bool(re.match(r"^[A-Za-z]:[\\/]", text))


def _norm(text: str) -> str:
    """Lexically normalised, ``~`` expanded, absolute if it was; no symlinks resolved (a link
    differs between machines and the hash must not touch the file system)."""
    text = os.path.expanduser(text)
    return os.path.normpath(text) if text else text


def _relative_to(path: str, base: str) -> str | None:
    """`path` relative to `base` ("." for equal), or None when it is not inside it."""
    if not path or not base:
        return None
    if os.path.isabs(path) != os.path.isabs(base):  # compare like with like (relative: against the cwd)
        path, base = os.path.abspath(path), os.path.abspath(base)
    rel = os.path.relpath(path, base)
    return None if rel == ".." or rel.startswith(".." + os.sep) else rel


def _join(token: str, rel: str) -> str:
    return token if rel in (".", "") else f"{token}/{PurePosixPath(*rel.split(os.sep))}"


def portable_folder(path: str, *, synthetic_root: str = "", data_root: str = "") -> str:
    """One data folder in its portable form (see the module docstring)."""
    if not path:
        return path
    if path.startswith("<"):  # already a token form
        return path
    p = _norm(path)
    for token, base in ((SYNTHETIC, synthetic_root), (ROOT, data_root)):
        rel = _relative_to(p, _norm(base)) if base and not base.startswith("<") else None
        if rel is not None:
            return _join(token, rel)
    if not os.path.isabs(p):
        return PurePosixPath(*p.split(os.sep)).as_posix()
    return f"{DATA}/{os.path.basename(p)}"


def portable_run_ref(path: str) -> str:
    """``model.init_from`` (a run dir or checkpoint file) in the relative form the experiments
    write: from the run dir's name on."""
    if not path or not is_absolute(path):
        return path
    parts = PurePosixPath(_norm(path).replace(os.sep, "/")).parts
    if CHECKPOINTS in parts[:-1]:
        i = len(parts) - 1 - parts[::-1].index(CHECKPOINTS)  # the last checkpoints/ component
        return "/".join(parts[max(i - 1, 1):])
    return parts[-1]


# dotted config fields that never change what a finished run computed (whether a run stops on
# failing reads; whether it writes TensorBoard events): left out of the config hash
# (RunConfig.config_hash), so adding one renamed no run directory
OPERATIONAL_FIELDS = frozenset({"data.max_failed_fraction", "tensorboard"})


# dotted config fields added after run names were published, with the value every earlier run
# had: at that value a field is left out of the hash (no existing run is renamed), any other
# value enters it
LATER_FIELDS = {"solver.accumulate": 1, "model.balance": "droppathway", "model.ogm_alpha": 0.1,
                "model.ogm_start_epoch": 0, "model.ogm_end_epoch": 50, "model.gblend_weights": [],
                "model.gblend_window_epochs": 0}


def without_operational(cfg: dict[str, Any]) -> dict[str, Any]:
    """A config dict without :data:`OPERATIONAL_FIELDS`, and without :data:`LATER_FIELDS` at
    the value runs had before they existed. ``model.balance=none`` hashes as "droppathway" (its
    rate is 0 then): the same computation keeps one run name."""
    out = copy.deepcopy(cfg)
    model = out.get("model", {})
    if model.get("balance") == "none":  # validated to have droppathway_rate 0: DropPathway's computation at rate 0
        model["balance"] = "droppathway"
    for path in OPERATIONAL_FIELDS | set(LATER_FIELDS):
        *sections, key = path.split(".")
        node = out
        for section in sections:
            node = node.get(section, {})
        if path in OPERATIONAL_FIELDS or (key in node and node[key] == LATER_FIELDS[path]):
            node.pop(key, None)
    return out


def hash_form(cfg: dict[str, Any]) -> dict[str, Any]:
    """A config dict (``RunConfig.to_dict()``) with every machine path in its portable form."""
    out = copy.deepcopy(cfg)
    data, model = out.get("data", {}), out.get("model", {})
    synthetic = str(data.get("synthetic_root", ""))
    root = str(data.get("root", ""))
    root_form = portable_folder(root, synthetic_root=synthetic)
    for key in DATA_PATH_FIELDS:
        if key in data and isinstance(data[key], str):
            if key == "root":
                data[key] = root_form
            else:  # split and annotation folders may live below the dataset root
                form = portable_folder(data[key], synthetic_root=synthetic, data_root=root)
                data[key] = form.replace(ROOT, root_form, 1) if form.startswith(ROOT) and root_form else form
    if "synthetic_root" in data:
        data["synthetic_root"] = SYNTHETIC
    if isinstance(model.get("init_from"), str):
        model["init_from"] = portable_run_ref(model["init_from"])
    return out


# --- records: final.json, metrics.jsonl ------------------------------------------------------
@dataclass(frozen=True)
class Anchor:
    """A folder whose absolute path is replaced by `token` (``""``: by the relative path alone)."""

    path: str
    token: str


def anchors_for(*, run_dir: str, cfg: dict[str, Any] | None = None, project_root: str = "") -> list[Anchor]:
    """The anchors of one run's records, most specific first: its sweep dir (paths of its own and
    sibling runs become ``<run name>/...``), its data folders, the project, the home."""
    data = (cfg or {}).get("data", {})
    out = [Anchor(os.path.dirname(os.path.abspath(run_dir)), "")]
    if data.get("root"):
        out.append(Anchor(str(data["root"]), portable_folder(str(data["root"]),
                                                             synthetic_root=str(data.get("synthetic_root", "")))))
    if data.get("synthetic_root"):
        out.append(Anchor(str(data["synthetic_root"]), SYNTHETIC))
    if project_root:
        out.append(Anchor(project_root, ""))
    out.append(Anchor(os.path.expanduser("~"), HOME))
    return out


def scrub_path(text: str, anchors: Iterable[Anchor]) -> str:
    """`text` (an absolute path) rewritten against the first anchor it lies under; a path under
    none keeps only its last component (``<path>/name``)."""
    p = _norm(text)
    for a in anchors:
        base = _norm(a.path)
        if not base or not os.path.isabs(base) or base == os.sep:
            continue
        rel = _relative_to(p, base)
        if rel is not None:
            return _join(a.token, rel) if a.token else PurePosixPath(*rel.split(os.sep)).as_posix()
    return f"{PATH}/{os.path.basename(p)}"


# an absolute path inside a longer string: /a/b (two components at least), ~/a or C:\a
ABSOLUTE_IN_TEXT = re.compile(r"(?<![\w.<>~/:-])(?:~|[A-Za-z]:)?[/\\](?:[\w.+@-]+[/\\])+[\w.+@-]*")


def scrub_paths(obj: Any, anchors: list[Anchor]) -> Any:
    """A copy of a JSON value with every absolute path in its strings rewritten (:func:`scrub_path`)."""
    if isinstance(obj, dict):
        return {k: scrub_paths(v, anchors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [scrub_paths(v, anchors) for v in obj]
    if isinstance(obj, str):
        if is_absolute(obj) and " " not in obj.strip():
            return scrub_path(obj.strip(), anchors)
        return ABSOLUTE_IN_TEXT.sub(lambda m: scrub_path(m.group(), anchors) if is_absolute(m.group()) else m.group(), obj)
    return obj
