"""Portable run identity: no machine path enters the config hash, so clones agree on run names."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from avsf import experiments as E
from avsf import launch
from avsf import portable as P
from avsf.config import DataConfig, ModelConfig, RunConfig, SolverConfig
from avsf.presets import get_preset

REPO = Path(__file__).resolve().parents[1]
# string fields that name no path (a new path field must be added to portable.PATH_FIELDS)
NOT_PATHS = {("", "name"), ("", "device"), ("data", "dataset"), ("data", "synthetic_scale"),
             ("data", "decode_failure"), ("data", "ava_version"), ("data", "ava_test_boxes"),
             ("solver", "optimizer"), ("solver", "schedule")}


def test_every_string_field_is_a_known_path_or_not_a_path():
    found = set()
    for section, cls in (("", RunConfig), ("model", ModelConfig), ("data", DataConfig), ("solver", SolverConfig)):
        for name, tp in typing.get_type_hints(cls).items():
            if tp is str:
                found.add((section, name))
    model_choices = {("model", k) for k in ("arch", "av_lateral", "droppathway_mode", "audio_tf_block", "head",
                                            "task", "freeze", "roi_spatial_pool", "balance")}
    unknown = found - NOT_PATHS - model_choices - set(P.PATH_FIELDS)
    assert not unknown, f"string config fields neither in portable.PATH_FIELDS nor known to hold no path: {unknown}"


def _with_paths(cfg: RunConfig, base: str, *, user_root: str | None = None) -> RunConfig:
    synthetic = f"{base}/data/synthetic"
    root = user_root or f"{synthetic}/views/epic-smoke-seed0"
    return cfg.with_overrides({"data.synthetic_root": synthetic, "data.root": root,
                               "data.split_dir": f"{root}/splits", "model.init_from": f"{base}/sweeps/pre-abc/checkpoints/c.pt"})


def test_hash_ignores_where_the_checkout_and_data_live():
    cfg = get_preset("avslowfast_tiny")
    a, b = _with_paths(cfg, "/home/alice/avsf"), _with_paths(cfg, "/scratch/bob/clone2")
    assert a.to_dict() != b.to_dict() and a.config_hash() == b.config_hash()
    form = P.hash_form(a.to_dict())
    assert form["data"]["synthetic_root"] == "<synthetic>"
    assert form["data"]["root"] == "<synthetic>/views/epic-smoke-seed0"
    assert form["data"]["split_dir"] == "<synthetic>/views/epic-smoke-seed0/splits"
    assert form["model"]["init_from"] == "pre-abc/checkpoints/c.pt"
    # a user's dataset: the folder name counts, its parent (the machine's mount point) does not
    k400 = [_with_paths(cfg, "/x", user_root=r).config_hash() for r in ("/mnt/a/kinetics400", "~/kinetics400")]
    assert k400[0] == k400[1] != _with_paths(cfg, "/x", user_root="/mnt/a/kinetics600").config_hash()
    # what the data is still counts: the generator version, scale and seed of the built-in data
    assert cfg.with_overrides(["data.synthetic_version=2"]).config_hash() != cfg.config_hash()
    assert cfg.with_overrides(["data.synthetic_seed=1"]).config_hash() != cfg.config_hash()


def test_relative_and_absolute_init_from_name_the_same_run():
    cfg = get_preset("avslowfast_tiny")
    rel = cfg.with_overrides(["model.init_from=pre-abc"])
    assert rel.config_hash() == cfg.with_overrides(["model.init_from=/any/sweeps/pre-abc"]).config_hash()
    assert rel.config_hash() != cfg.with_overrides(["model.init_from=pre-xyz"]).config_hash()


def test_portable_form_is_idempotent_so_an_archived_config_keeps_its_hash():
    cfg = _with_paths(get_preset("avslowfast_tiny"), "/home/alice/avsf")
    form = P.hash_form(cfg.to_dict())
    assert P.hash_form(form) == form
    assert RunConfig.from_dict(form).config_hash() == cfg.config_hash()


def _all_smoke_names(monkeypatch, root: Path) -> dict[str, list[str]]:
    monkeypatch.setattr(E, "project_root", lambda: root)
    return {name: sorted(launch.run_dir_for(c, root / "sweeps").name
                         for c in E.get_grid(name, scale="smoke", seeds=[0, 1]))
            for name in E.list_experiments()}


def test_every_smoke_grid_gets_the_same_run_names_at_two_paths(monkeypatch, tmp_path):
    a = _all_smoke_names(monkeypatch, tmp_path / "home" / "alice" / "avsf")
    b = _all_smoke_names(monkeypatch, tmp_path / "scratch" / "clone")
    assert a == b
    assert sum(len(v) for v in a.values()) > 50  # every notebook's grid took part
    # transfer rows name their pretrain run: the name is the portable one too
    ssl = E.get_grid("table8_ssl", scale="smoke", seeds=[0])
    names = {f"{c.name}-{c.config_hash()}" for c in ssl}
    assert all(c.model.init_from in names for c in ssl if c.model.init_from)


_NAMES = """
import json, sys
from avsf import experiments as E
out = {n: sorted(f"{c.name}-{c.config_hash()}" for c in E.get_grid(n, scale="smoke", seeds=[0],
       data_roots={"kinetics": sys.argv[1]} if n == "table3_kinetics" else None))
       for n in ("ablate_droppath", "table2_epic_kitchens", "table8_ssl", "table3_kinetics")}
out["_root"] = str(E.project_root())
print(json.dumps(out))
"""


def _clone(dest: Path) -> Path:
    """A copy of the checkout's code (what `git clone` would give) at `dest`."""
    shutil.copytree(REPO / "avsf", dest / "avsf", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", dest / "pyproject.toml")
    return dest


def test_two_clones_at_different_paths_name_the_runs_alike(tmp_path):
    """Each clone imports its own avsf (its project root differs), and each has its copy of a
    user dataset in another place: the run names agree."""
    results = []
    for where in ("a/avsf", "b/deeper/avsf2"):
        clone = _clone(tmp_path / where)
        data = tmp_path / where / "mydata" / "kinetics400"
        data.mkdir(parents=True)
        env = {**os.environ, "PYTHONPATH": str(clone)}
        out = subprocess.run([sys.executable, "-c", _NAMES, str(data)], capture_output=True, text=True,
                             env=env, cwd=clone, timeout=300)
        assert out.returncode == 0, out.stderr
        results.append(json.loads(out.stdout))
    assert results[0].pop("_root") != results[1].pop("_root")  # two checkouts indeed
    assert results[0] == results[1]


# --- the same run dir at another path: accepted and re-pointed ---------------------------------
FAKE_JOB = f"{REPO / 'tests' / 'test_launch.py'}:fake_train"


def _at(cfg: RunConfig, base: Path) -> RunConfig:
    return cfg.with_overrides({"data.synthetic_root": str(base / "data" / "synthetic"), "solver.epochs": 2,
                               "solver.base_lr": 0.0})


def test_a_sweep_moved_to_another_machine_is_reused_and_re_pointed(tmp_path):
    cfg = get_preset("avslowfast_tiny")
    here, there = _at(cfg, tmp_path / "machine_a"), _at(cfg, tmp_path / "machine_b")
    first = launch.submit([here], backend="debug", sweep_dir=tmp_path / "a" / "sweeps", job_fn=FAKE_JOB, verbose=False)
    assert len(first.submitted) == 1
    run_a = launch.run_dir_for(here, tmp_path / "a" / "sweeps")
    (run_a / "config.json").write_text(json.dumps(here.to_dict()))  # what the trainer leaves
    shutil.copytree(tmp_path / "a" / "sweeps", tmp_path / "b" / "sweeps")  # rsync to the other machine
    again = launch.submit([there], backend="debug", sweep_dir=tmp_path / "b" / "sweeps", job_fn=FAKE_JOB, verbose=False)
    run_b = launch.run_dir_for(there, tmp_path / "b" / "sweeps")
    assert run_b.name == run_a.name and again.done == [str(run_b)] and not again.submitted
    assert json.loads((run_b / "launch.json").read_text())["config"] == there.to_dict()
    assert json.loads((run_b / "config.json").read_text())["data"]["synthetic_root"] == there.data.synthetic_root
    assert "re-pointed" in (run_b / "launch.log").read_text()


def test_the_trainer_resumes_a_run_dir_made_at_other_paths_but_not_another_config(tmp_path):
    from avsf.engine.train import _check_run_dir
    from avsf.errors import UserError

    cfg = get_preset("avslowfast_tiny")
    (tmp_path / "config.json").write_text(json.dumps(_at(cfg, tmp_path / "a").to_dict()))
    _check_run_dir(tmp_path, _at(cfg, tmp_path / "b"))  # other paths: the same run
    with pytest.raises(UserError, match="different config"):
        _check_run_dir(tmp_path, _at(cfg, tmp_path / "b").with_overrides(["seed=3"]))


def _leaves(d: dict, prefix: str = ""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def test_every_field_but_a_paths_parent_folder_and_the_operational_ones_enters_the_hash():
    from avsf.config import set_by_path

    base = _with_paths(get_preset("avslowfast_tiny"), "/home/alice/avsf")
    for key, value in _leaves(base.to_dict()):
        cfg = RunConfig.from_dict(base.to_dict())
        if isinstance(value, bool):
            new = not value
        elif isinstance(value, (int, float)):
            new = value + 1
        elif isinstance(value, str):
            new = value + "x"  # for a path: another folder (or file) name
        else:
            new = list(value)[:-1] if value else ([0.5] if key in ("solver.steps", "model.gblend_weights") else ["res2"])
        set_by_path(cfg, key, new)
        if key == "data.synthetic_root":  # the folders below it are no longer the built-in data's
            assert P.hash_form(cfg.to_dict())["data"]["root"] == "<data>/epic-smoke-seed0"
        if key in P.OPERATIONAL_FIELDS:  # never changes what a finished run computed
            assert cfg.config_hash() == base.config_hash(), key
            continue
        assert cfg.config_hash() != base.config_hash(), key
    # the built-in data itself is its version, scale and seed, wherever it is generated
    builtin = base.with_overrides({"data.root": "", "data.split_dir": ""})
    moved = builtin.with_overrides({"data.synthetic_root": "/elsewhere/synth"})
    assert moved.config_hash() == builtin.config_hash()


def test_a_later_field_at_its_old_value_renames_no_run():
    """solver.accumulate (P.LATER_FIELDS) came after run names were published: at 1 it is left
    out of the hash (the smoke AVSlowFast keeps the name it had before the field existed), at 2
    it enters it."""
    cfg = get_preset("avslowfast_tiny")
    assert cfg.config_hash() == "4bcbbb5ed25a"
    assert cfg.with_overrides({"solver.accumulate": 2}).config_hash() != cfg.config_hash()
    old = cfg.to_dict()
    del old["solver"]["accumulate"]  # a config.json written before the field
    assert RunConfig.from_dict(old).config_hash() == cfg.config_hash()
    # the balancing fields of issue 16 likewise
    for key in ("balance", "ogm_alpha", "ogm_start_epoch", "ogm_end_epoch", "gblend_weights", "gblend_window_epochs"):
        del old["model"][key]
    assert RunConfig.from_dict(old).config_hash() == cfg.config_hash()
    assert cfg.with_overrides({"model.balance": "ogm_ge"}).config_hash() != cfg.config_hash()
    # "no balancing" is DropPathway at rate 0, one computation under one name
    no_dp = cfg.with_overrides({"model.droppathway_rate": 0})
    assert cfg.with_overrides({"model.balance": "none", "model.droppathway_rate": 0}).config_hash() == no_dp.config_hash()
