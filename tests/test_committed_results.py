"""The committed results/ themselves: every table renders again from its folder alone (its runs/
archive and provenance.json, no sweeps/) byte for byte as committed, and the folder names no path,
host or user of the machine that made it (issue 11: every number traced to its run)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from avsf.report import archive as A

RESULTS = Path(__file__).resolve().parents[1] / "results"
TABLES = sorted(p.parent.name for p in RESULTS.glob(f"*/{A.PROVENANCE_FILE}"))


def test_results_hold_rendered_tables():
    assert "ablate_droppath" in TABLES  # the main job's table is committed


@pytest.mark.parametrize("name", TABLES)
def test_a_committed_table_renders_again_from_its_folder_alone(tmp_path, name):
    out = tmp_path / "results" / name
    shutil.copytree(RESULTS / name, out)
    committed = {p.name: p.read_bytes() for p in out.iterdir() if p.suffix in (".csv", ".md", ".json")}
    A.render_from_archive(out)
    rendered = {p.name: p.read_bytes() for p in out.iterdir() if p.suffix in (".csv", ".md", ".json")}
    assert rendered.keys() == committed.keys()
    changed = [n for n in committed if rendered[n] != committed[n]]
    assert not changed, f"{name}: {changed} differ from the committed files when rendered from results/ alone"


def test_committed_results_name_no_machine_path():
    A.check_no_machine_paths(RESULTS)
