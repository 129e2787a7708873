"""`avsf verify-results`: a committed table's runs rerun from its stored settings and compared
with its archive (issue 17, part 3); provenance.json records the data checksums and the runs'
machine fingerprints."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from avsf import experiments as E
from avsf import launch
from avsf import report as R
from avsf.cli import main
from avsf.errors import UserError
from avsf.report import archive as A
from avsf.report.verify import verify_table

EXP = "ablate_droppath"
ROWS = ("slowfast", "dp_none")
SEEDS = [0, 1]
OVERRIDES = ["solver.epochs=1", "data.limit_videos=24", "data.num_workers=0"]
DECLARED = ["backend", "cluster", "scale", "seeds", "data_root_kinetics", "output_dir", "sweep_dir", "max_parallel",
            "overrides"]


@pytest.fixture(scope="module")
def table(tmp_path_factory, smoke_root):
    """Two rows of Table 5c, two seeds, trained (debug backend, one thread) and rendered as the
    notebook renders them; the sweep is then deleted, as in a fresh clone."""
    import torch

    tmp = tmp_path_factory.mktemp("verify")
    entries = [e for e in E.get_grid_entries(EXP, scale="smoke", seeds=SEEDS, overrides=OVERRIDES) if e.row in ROWS]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        launch.submit([e.config for e in entries], backend="debug", sweep_dir=tmp / "sweeps", verbose=False)
        ns = {"backend": "debug", "cluster": None, "scale": "smoke", "seeds": SEEDS, "data_root_kinetics": None,
              "output_dir": str(tmp / "results" / EXP), "sweep_dir": str(tmp / "sweeps"), "max_parallel": 1,
              "overrides": OVERRIDES}
        built = R.build(R.validate_parameters(ns, notebook=EXP, declared=DECLARED), entries)
    finally:
        torch.set_num_threads(threads)
    return tmp, built.out_dir


@pytest.fixture
def one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_provenance_records_the_data_checksums_and_the_runs_fingerprints(table, smoke_root):
    _, out = table
    record = json.loads((out / A.PROVENANCE_FILE).read_text())
    manifest = json.loads((smoke_root / "manifest.json").read_text())
    assert record["data"] == {"<synthetic>/smoke-seed0": {"digest": manifest["checksums"]["digest"],
                                                         "check": manifest["checksums"]["check"],
                                                         "generator_version": manifest["generator_version"]}}
    assert record["runs"] == len(ROWS) * len(SEEDS) and record["runs_reused"] == 0  # all trained by this process
    envs = record["environments"]
    assert sum(e["runs"] for e in envs) == len(ROWS) * len(SEEDS)
    assert {e["environment"]["torch_threads"] for e in envs} == {1}
    assert "checksums " in (out / "table.md").read_text()  # the provenance line says so too
    A.check_no_machine_paths(out.parent)


def test_the_reruns_of_a_fresh_clone_are_identical(table, one_thread, capsys):
    tmp, out = table
    shutil.rmtree(tmp / "sweeps", ignore_errors=True)  # a fresh clone has results/ only
    result = verify_table(out, sweep_dir=tmp / "verify", backend="debug")
    assert result.reproduced and not result.failed
    assert len(result.checks) == len(ROWS) * len(SEEDS)
    assert all(c.same_machine and c.identical for c in result.checks)
    # the CLI on the finished reruns (reused, not trained again): exit 0 and one line per run
    capsys.readouterr()
    assert main(["verify-results", EXP, "--results", str(out.parent), "--sweep-dir", str(tmp / "verify"),
                 "--backend", "debug"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("identical (same machine)") == 4 and "reproduced exactly" in printed


def _edit_archived_final(out: Path, edit) -> str:
    name = sorted(A.load_archive(out))[0]
    path = A.runs_dir(out) / name / "final.json"
    final = json.loads(path.read_text())
    edit(final)
    path.write_text(json.dumps(final))
    return name


def test_another_number_on_the_same_machine_is_not_reproduced(table, one_thread, tmp_path, capsys):
    tmp, out = table
    copy = tmp_path / "results" / EXP
    shutil.copytree(out, copy)
    name = _edit_archived_final(copy, lambda f: f.update(top1=f["top1"] + 1.25))
    result = verify_table(copy, sweep_dir=tmp / "verify", backend="debug")
    assert result.failed and not result.reproduced
    bad = [c for c in result.checks if not c.identical]
    assert [c.run for c in bad] == [name] and bad[0].differing == ["top1"] and bad[0].same_machine
    assert bad[0].rerun - bad[0].committed == pytest.approx(-1.25)
    assert main(["verify-results", EXP, "--results", str(copy.parent), "--sweep-dir", str(tmp / "verify"),
                 "--backend", "debug"]) == 1
    assert "DIFFERS (same machine) in top1" in capsys.readouterr().out


def test_differences_on_another_machine_are_listed_beside_the_seed_spread(table, one_thread, tmp_path):
    tmp, out = table
    copy = tmp_path / "results" / EXP
    shutil.copytree(out, copy)

    def other_machine(final):
        final["environment"] = {**final["environment"], "torch_threads": 16}
        final["top1"] += 0.5

    name = _edit_archived_final(copy, other_machine)
    result = verify_table(copy, sweep_dir=tmp / "verify", backend="debug")
    assert not result.failed and not result.reproduced  # explained by the fingerprint, but not the same
    check = next(c for c in result.checks if c.run == name)
    assert not check.same_machine and check.row_sd is not None and "the row's sd over seeds" in check.line()


def test_a_recipe_this_code_no_longer_builds_is_reported(table, one_thread, tmp_path):
    tmp, out = table
    copy = tmp_path / "results" / EXP
    shutil.copytree(out, copy)
    record = json.loads((copy / A.PROVENANCE_FILE).read_text())
    record["settings"]["overrides"] = [*OVERRIDES[:-1], "data.num_workers=1"]  # other configs, other names
    (copy / A.PROVENANCE_FILE).write_text(json.dumps(record))
    result = verify_table(copy, sweep_dir=tmp_path / "verify", backend="debug", rows=["slowfast"], seeds=[0])
    assert result.failed and len(result.not_built) == 1 and not result.checks


def test_the_sweep_the_table_came_from_is_refused(tmp_path, table):
    tmp, out = table
    sweep = tmp_path / "sweeps"
    name = sorted(A.load_archive(out))[0]
    (sweep / name).mkdir(parents=True)
    shutil.copy(A.runs_dir(out) / name / "final.json", sweep / name / "final.json")
    with pytest.raises(UserError, match="not a rerun"):
        verify_table(out, sweep_dir=sweep, backend="debug")
    with pytest.raises(UserError, match="rows"):
        verify_table(out, sweep_dir=tmp_path / "v", backend="debug", rows=["no_such_row"])


def test_the_data_record_reads_a_restored_runs_portable_config(tmp_path, monkeypatch):
    """A run copied back from results/<nb>/runs/ names its data as ``<synthetic>/...``: the
    record looks for the manifest where this project keeps the built-in data."""
    from avsf import experiments
    from avsf.report.provenance import data_record

    dataset = tmp_path / "data" / "synthetic" / "smoke-seed0"
    dataset.mkdir(parents=True)
    (dataset / "manifest.json").write_text(json.dumps({"generator_version": 7, "checksums": {"digest": "abc",
                                                                                                "check": "ok"}}))
    monkeypatch.setattr(experiments, "project_root", lambda: tmp_path)
    portable = {"data": {"synthetic_root": "<synthetic>", "synthetic_scale": "smoke", "synthetic_seed": 0}}
    absolute = {"data": {"synthetic_root": str(tmp_path / "data" / "synthetic"), "synthetic_scale": "smoke",
                         "synthetic_seed": 0}}
    expected = {"<synthetic>/smoke-seed0": {"digest": "abc", "check": "ok", "generator_version": 7}}
    assert data_record([portable]) == data_record([absolute]) == expected
