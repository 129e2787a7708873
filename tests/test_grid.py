"""The grid runner (avsf.grid), the one door of `avsf sweep` and the notebooks: overrides enter
the hash and the init_from links, runs go in dependency order, `--rows`, failures and exit codes.

The job function here (:func:`ordered_train`) stands in for the trainer and checks the one thing
the order is for: a run that starts from another (``model.init_from``) finds that run finished.
It takes no time, so the real grids (Table 7's detectors, Table 8's transfer rows) run in full.
The real trainer goes through the same door in the last test and in tests/test_notebooks.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from avsf import grid as G
from avsf import launch
from avsf.cli import main
from avsf.errors import UserError
from avsf.experiments import get_grid

REPO = Path(__file__).resolve().parents[1]
JOB = f"{Path(__file__).resolve()}:ordered_train"
FAIL_ENV = "AVSF_TEST_FAIL_PRESET"  # ordered_train fails every run of this preset
JOB_S_ENV = "AVSF_TEST_JOB_S"  # and takes this long (seconds) for each one
QUICK = ("solver.epochs=1",)


def ordered_train(cfg, run_dir, *, stop_event=None) -> dict:
    """Write final.json at once, after checking that the run ``model.init_from`` names (a sibling
    run dir) is finished; fail like a missing dataset for the preset named in $AVSF_TEST_FAIL_PRESET."""
    run_dir = Path(run_dir)
    started = time.time()
    if cfg.name == os.environ.get(FAIL_ENV):
        (run_dir / "log.txt").write_text("building the dataset\n")
        raise UserError(f"dataset root /nowhere/{cfg.name} does not exist\n(a second line the reason leaves out)")
    if cfg.model.init_from:
        source = run_dir.parent / cfg.model.init_from / "final.json"
        if not source.is_file():
            raise RuntimeError(f"started before {cfg.model.init_from} finished")
        # the source finished before this run started
        assert json.loads(source.read_text())["ended"] <= started
    time.sleep(float(os.environ.get(JOB_S_ENV, "0.05")))
    final = {"top1": 1.0, "started": started, "ended": time.time()}
    (run_dir / "final.json").write_text(json.dumps(final))
    return final


@pytest.fixture
def no_data(monkeypatch):
    """prepare_data recorded, not run (the fake job reads no data): [configs of each call]."""
    calls = []
    monkeypatch.setattr(G, "prepare_data", lambda configs: calls.append(list(configs)))
    return calls


def _finals(sweep: Path, grid: G.Grid) -> dict[str, dict]:
    return {r.name: json.loads((sweep / r.name / "final.json").read_text()) for r in grid.runs
            if (sweep / r.name / "final.json").exists()}


# --- building the grid ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["table8_ssl", "table7_ava"])
def test_overrides_enter_every_hash_and_every_init_from_link(name):
    grid = G.build_grid(name, scale="smoke", seeds=[0, 1], overrides=["solver.epochs=1"])
    plain = G.build_grid(name, scale="smoke", seeds=[0, 1])
    assert not set(grid.names) & set(plain.names)  # the override is part of every run's identity
    linked = [r for r in grid.runs if r.config.model.init_from]
    assert linked and all(r.after == (r.config.model.init_from,) for r in linked)  # names a run of this grid
    assert all(r.config.solver.epochs == 1 for r in grid.runs)
    # what `avsf sweep --set` did before: the override after the grid was built names a folder
    # that no run of the grid will ever write
    late = {launch.run_name(c.with_overrides(["solver.epochs=1"])): c for c in get_grid(name, scale="smoke", seeds=[0])}
    assert any(c.model.init_from not in late for c in late.values() if c.model.init_from)


def test_levels_put_each_run_after_the_runs_it_starts_from():
    grid = G.build_grid("table8_ssl", scale="smoke", seeds=[0])
    levels = grid.levels()
    assert len(levels) == 2 and sum(map(len, levels)) == len(grid.runs)
    first = {r.name for r in levels[0]}
    assert all(not r.after for r in levels[0]) and all(set(r.after) <= first for r in levels[1])
    assert {r.config.model.task for r in levels[0] if r.config.name.endswith("pretrain_tiny")} == {"pretrain"}
    # the random-init transfer rows start from nothing: they need not wait
    assert any(r.config.model.freeze == "backbone" and not r.after for r in levels[0])


def test_rows_add_what_they_start_from_and_unknown_rows_list_the_valid_ones():
    assert G.select_rows("table7_ava", ["avslowfast_ava"], scale="smoke") == ["k400_avslowfast", "avslowfast_ava"]
    assert G.select_rows("ablate_fusion_stages", ["late_fusion"], scale="smoke") == ["slowfast", "audio_only", "late_fusion"]
    assert len(G.build_grid("ablate_fusion_stages", scale="smoke", seeds=[0], rows=["late_fusion"]).runs) == 2
    grid = G.build_grid("table8_ssl", scale="smoke", seeds=[0, 1], rows=["probe_avsf_rot_hmdb51"])
    assert sorted({e.row for e in grid.entries}) == ["probe_avsf_rot_hmdb51", "pt_avsf_rot"]
    assert len(grid.runs) == 4 and [len(lv) for lv in grid.levels()] == [2, 2]
    with pytest.raises(UserError, match=r"table7_ava has no row 'ava'; rows of table7_ava at scale smoke: "
                                        r"k400_slowfast, k400_avslowfast, slowfast_ava, avslowfast_ava$"):
        G.select_rows("table7_ava", ["avslowfast_ava", "ava"], scale="smoke")
    with pytest.raises(UserError, match="row 'slowfast_r101_ava' runs only at scale paper; rows of"):
        G.select_rows("table7_ava", ["slowfast_r101_ava"], scale="smoke")


def test_the_notebooks_and_the_sweep_share_their_defaults():
    import papermill as pm

    from avsf.cli import build_parser

    params = pm.inspect_notebook(str(REPO / "notebooks" / "table7_ava.ipynb"))
    assert json.loads(params["seeds"]["default"]) == list(G.DEFAULT_SEEDS)
    assert int(params["max_parallel"]["default"]) == G.DEFAULT_MAX_PARALLEL
    args = build_parser().parse_args(["sweep", "table7_ava", "--out", "x"])
    assert (args.seeds, args.max_parallel) == (",".join(map(str, G.DEFAULT_SEEDS)), G.DEFAULT_MAX_PARALLEL)


# --- running it -----------------------------------------------------------------------------------
def test_debug_backend_runs_the_levels_in_order_and_data_is_prepared_once(tmp_path, no_data, capsys):
    grid = G.build_grid("table8_ssl", scale="smoke", seeds=[0], overrides=QUICK)
    outcome = G.run_grid(grid, backend="debug", sweep_dir=tmp_path, job_fn=JOB, poll_s=0.01)
    assert outcome.done and not outcome.failures, outcome.failures
    assert [len(c) for c in no_data] == [len(grid.runs)]  # once, for every run, before the first submission
    finals = _finals(tmp_path, grid)
    for r in grid.runs:
        for source in r.after:
            assert finals[source]["ended"] <= finals[r.name]["started"]
    err = capsys.readouterr().err
    assert f"[table8_ssl] {len(grid.runs)}/{len(grid.runs)} runs finished" in err
    # again: everything is reused, nothing is trained twice
    again = G.run_grid(grid, backend="debug", sweep_dir=tmp_path, job_fn=JOB, poll_s=0.01)
    assert again.done and _finals(tmp_path, grid) == finals


def test_a_failed_source_leaves_its_dependents_not_run_with_one_line_reasons(tmp_path, no_data, monkeypatch):
    monkeypatch.setenv(FAIL_ENV, "slowfast_tiny")  # the Kinetics SlowFast that the SlowFast detector starts from
    grid = G.build_grid("table7_ava", scale="smoke", seeds=[0], overrides=QUICK)
    outcome = G.run_grid(grid, backend="debug", sweep_dir=tmp_path, job_fn=JOB, poll_s=0.01)
    by_preset = {r.config.name: r.name for r in grid.runs}
    source, detector = by_preset["slowfast_tiny"], by_preset["slowfast_tiny_ava"]
    assert outcome.states == {by_preset["avslowfast_tiny"]: "done", by_preset["avslowfast_tiny_ava"]: "done",
                              source: "failed", detector: G.NOT_RUN}
    assert outcome.failures == {
        source: "dataset root /nowhere/slowfast_tiny does not exist",
        detector: f"not run: it starts from {source}, which failed (dataset root /nowhere/slowfast_tiny does not exist)"}
    assert not (tmp_path / detector).exists()  # never submitted
    # once the source's problem is fixed, a retry trains exactly the two missing runs
    monkeypatch.delenv(FAIL_ENV)
    again = G.run_grid(grid, backend="debug", sweep_dir=tmp_path, job_fn=JOB, retry_failed=True, poll_s=0.01)
    assert again.done and not again.failures


def test_local_backend_submits_a_level_once_the_previous_one_is_done(tmp_path, no_data, capsys):
    grid = G.build_grid("table7_ava", scale="smoke", seeds=[0], overrides=QUICK)
    outcome = G.run_grid(grid, backend="local", sweep_dir=tmp_path, job_fn=JOB, poll_s=0.2, timeout_s=240)
    assert outcome.done, outcome.failures
    finals = _finals(tmp_path, grid)
    sources = [finals[r.name]["ended"] for r in grid.levels()[0]]
    detectors = [json.loads((tmp_path / r.name / "launch.json").read_text())["submitted_at"] for r in grid.levels()[1]]
    assert len(detectors) == 2 and all(d for d in detectors)
    assert max(sources) <= min(finals[r.name]["started"] for r in grid.levels()[1])
    assert "2 run(s) start from runs of this grid: waiting for those first" in capsys.readouterr().err


# --- avsf sweep -----------------------------------------------------------------------------------
def _sweep(tmp_path, *extra: str) -> list[str]:
    return ["sweep", "table7_ava", "--backend", "debug", "--scale", "smoke", "--seeds", "0", "--out", str(tmp_path),
            "--job-fn", JOB, "--set", "solver.epochs=1", *extra]


def test_sweep_exit_codes_and_one_line_reasons(tmp_path, no_data, monkeypatch, capsys):
    monkeypatch.setenv(FAIL_ENV, "avslowfast_tiny")
    assert main(_sweep(tmp_path)) == 1
    err = capsys.readouterr().err
    assert "2 of 4 run(s) failed" in err and "Traceback" not in err and "a second line" not in err
    assert "dataset root /nowhere/avslowfast_tiny does not exist\n" in err
    assert "avslowfast_tiny_ava-" in err and "which failed (dataset root" in err
    monkeypatch.delenv(FAIL_ENV)
    assert main(_sweep(tmp_path)) == 1  # failed runs are not retried without --retry-failed
    assert main(_sweep(tmp_path, "--retry-failed")) == 0
    assert "4 done" in capsys.readouterr().err


def test_sweep_rows_reruns_chosen_cells(tmp_path, no_data, capsys):
    assert main(_sweep(tmp_path, "--rows", "avslowfast_ava", "--dry-run")) == 0
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == 2 and "avslowfast_tiny_ava-" in listed[1] and listed[1].endswith(")")
    assert "(after avslowfast_tiny-" in listed[1] and not list(tmp_path.iterdir())
    assert main(_sweep(tmp_path, "--rows", "avslowfast_ava")) == 0
    assert sorted(p.name.rsplit("-", 1)[0] for p in tmp_path.iterdir() if not p.name.startswith(".")) == \
        ["avslowfast_tiny", "avslowfast_tiny_ava"]
    assert main(_sweep(tmp_path, "--rows", "avslowfast_ava,nosuch")) == 2
    assert "table7_ava has no row 'nosuch'; rows of table7_ava at scale smoke: k400_slowfast" in capsys.readouterr().err


def test_a_failing_sweep_of_the_real_trainer_exits_non_zero_with_the_reason(tmp_path):
    """End to end, as a user types it: the runs cannot find their data."""
    missing = tmp_path / "no_epic"
    proc = subprocess.run([sys.executable, "-m", "avsf", "sweep", "table2_epic_kitchens", "--backend", "debug",
                           "--scale", "smoke", "--seeds", "0", "--out", str(tmp_path / "sweep"),
                           "--set", f"data.root={missing}"],
                          capture_output=True, text=True, timeout=600, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 1, proc.stderr[-2000:]
    failed = [ln for ln in proc.stderr.splitlines() if ln.startswith("  ") and ": dataset root" in ln]
    assert len(failed) == 2, proc.stderr[-2000:]
    assert all(f"dataset root {missing} does not exist or is not a folder" in ln for ln in failed)
    assert "2 of 2 run(s) failed" in proc.stderr


# --- progress -------------------------------------------------------------------------------------
def _frame(**states: str):
    import pandas as pd

    return pd.DataFrame({"run": list(states), "state": list(states.values()),
                         "reason": ["out of memory" if s == "failed" else "" for s in states.values()]})


def test_progress_eta_comes_from_the_runs_finished_since_the_wait_began():
    assert G.eta_s(total=8, finished=2, initial=2, elapsed_s=60.0) is None  # reused runs say nothing
    assert G.eta_s(total=8, finished=4, initial=2, elapsed_s=60.0) == pytest.approx(120.0)  # 2 runs a minute
    assert G.eta_s(total=8, finished=8, initial=0, elapsed_s=60.0) == 0.0


@pytest.mark.parametrize("kind", ["lines", "bar"])
def test_progress_names_a_failed_run_when_first_seen_and_counts_states(kind):
    import io

    out = io.StringIO()
    progress = G.GridProgress(label="t", total=3, not_run={}, out=out, kind=kind)
    progress(_frame(a="done", b="running", c="pending"))
    progress(_frame(a="done", b="failed", c="running"))
    progress(_frame(a="done", b="failed", c="running"))  # seen once: named once
    assert out.getvalue().count("[t] failed: b: out of memory") == 1
    assert "done 1, running 1, failed 1, ETA " in out.getvalue()
    progress(_frame(a="done", b="failed", c="done"))
    progress.close()
    text = out.getvalue()
    if kind == "lines":  # a log gets one line per change, the last says it all
        assert text.splitlines()[-1].startswith("[t] 3/3 runs finished, done 2, running 0, failed 1 (")
    else:  # the bar (redrawn with \r) is cleared, one summary line is left
        assert "|" in text and "\r" in text
        assert text.rsplit("\r", 1)[-1] == "[t] 3/3 runs finished in 00:00: done 2, failed 1\n"


def test_progress_kind_follows_where_the_output_goes(monkeypatch):
    import io

    assert G.progress_kind(io.StringIO()) == "lines"  # a log file, CI
    monkeypatch.setattr(G, "in_notebook", lambda: True)
    monkeypatch.setattr(G, "widgets_available", lambda: False)
    assert G.progress_kind(sys.stdout) == "bar" and G.progress_kind(io.StringIO()) == "lines"
    monkeypatch.setattr(G, "widgets_available", lambda: True)
    assert G.progress_kind(sys.stdout) == "widget"


def test_the_launchers_lines_go_to_the_progress_stream(tmp_path, no_data, capsys):
    import io

    out = io.StringIO()
    grid = G.build_grid("table7_ava", scale="smoke", seeds=[0], overrides=QUICK)
    assert G.run_grid(grid, backend="debug", sweep_dir=tmp_path, job_fn=JOB, poll_s=0.01, out=out).done
    assert "avsf.launch: submitted 2, already done 0" in out.getvalue()
    assert capsys.readouterr().err == ""  # a notebook draws stderr as an error
