"""Every number traced to its run: archived runs, runs.csv by name, provenance, render-only tables."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from importlib import metadata
from pathlib import Path

import pandas as pd
import pytest

from avsf.report import archive as A
from avsf import experiments as E
from avsf.report import provenance as V
from avsf import report as R
from avsf.config import RunConfig
from avsf.errors import UserError

REPO = Path(__file__).resolve().parents[1]
DECLARED = ["backend", "cluster", "scale", "seeds", "data_root_kinetics", "output_dir", "sweep_dir", "max_parallel",
            "overrides"]


def _fake_run(sweep: Path, exp: str, row: str, seed: int, top1: float) -> E.GridEntry:
    """A finished run dir as the trainer leaves it: config.json (this checkout's absolute data
    paths), final.json, metrics.jsonl (a torn last line), a checkpoint and a log."""
    cfg = E.row_config(exp, row, scale="smoke", seed=seed)
    d = R.run_dir_of(cfg, sweep)
    (d / "checkpoints").mkdir(parents=True)
    (d / "checkpoints" / "ckpt-000000004.pt").write_bytes(b"weights")
    (d / "log.txt").write_text(f"reading {cfg.data.synthetic_root}\n")
    (d / "config.json").write_text(json.dumps(cfg.with_overrides(["model.num_classes=20"]).to_dict()))
    (d / "launch.json").write_text(json.dumps({"config": cfg.to_dict(), "host": "gpu-node-17", "pid": 4242,
                                               "stderr": str(sweep / ".submitit" / "1" / "1_0_log.err")}))
    final = {"top1": top1, "top5": 90.0, "params": 1000, "gflops": 1.0, "views": 2, "train_wall_time_s": 60.0,
             "test_wall_time_s": 5.0, "per_class_accuracy": {"door closing": top1 + seed, "six shaking": top1 - 5},
             "init_from": {"path": str(sweep / "pre-0123456789ab" / "checkpoints" / "ckpt-000000008.pt"),
                           "init_from": "pre-0123456789ab", "step": 8}}
    (d / "final.json").write_text(json.dumps(final))
    lines = [{"kind": "epoch", "epoch": e, "train_loss": 3.0 / e, "train_top1": 10.0 * e,
              "val_top1": top1 - abs(e - 2 - seed)} for e in range(1, 5)]
    lines.append({"kind": "test", "epoch": 4, "test_top1": top1})
    (d / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"torn')
    return E.GridEntry(exp, row, seed, cfg)


def _grid(sweep: Path, exp: str) -> list[E.GridEntry]:
    entries = []
    for row in E.get_experiment(exp).rows_at("smoke"):
        if row.is_ensemble:
            continue
        for seed in (0, 1):
            entries.append(_fake_run(sweep, exp, row.key, seed, 40.0 + 3 * seed + len(row.key) % 7))
    for row in E.get_experiment(exp).rows_at("smoke"):  # the late-fusion metrics as report caches them
        if row.is_ensemble:
            for seed in (0, 1):
                v, a = (R.run_dir_of(E.row_config(exp, m, scale="smoke", seed=seed), sweep).name for m in row.members)
                cache = sweep / A.LATE_FUSION_DIR / f"{v}+{a}.json"
                cache.parent.mkdir(exist_ok=True)
                cache.write_text(json.dumps({"top1": 50.0 + seed, "top5": 95.0}))
    return entries


def _params(tmp_path: Path, exp: str) -> R.Params:
    ns = {"backend": "local", "cluster": None, "scale": "smoke", "seeds": [0, 1], "data_root_kinetics": None,
          "output_dir": str(tmp_path / "results" / exp), "sweep_dir": str(tmp_path / "sweeps"), "max_parallel": 2,
          "overrides": []}
    return R.validate_parameters(ns, notebook=exp, declared=DECLARED)


def test_table1_keeps_the_config_behind_every_count_and_a_rerender_keeps_them(tmp_path):
    from avsf.flops import count_model

    params = _params(tmp_path, "table1_architecture")
    out = R.build(params, []).out_dir
    table = pd.read_csv(out / "table.csv").set_index("preset")
    archived = sorted(p.name for p in A.runs_dir(out).iterdir())
    assert archived == sorted(table.index)
    for name in ("avslowfast_tiny", "slowfast_r50_4x16"):  # a resolved class count and a paper model
        run = A.runs_dir(out) / name
        counts = json.loads((run / "counts.json").read_text())
        assert counts["preset"] == name and counts["params (M)"] == table.loc[name, "params (M)"]
        cfg = RunConfig.from_dict(json.loads((run / "config.json").read_text()))
        assert isinstance(counts["classes"], int) and counts["classes"] == cfg.model.num_classes > 0
        recount = count_model(cfg.model, 256)  # the archived config alone gives the number again
        assert round(recount["params"] / 1e6, 2) == counts["params (M)"]
        assert round(recount["gflops"], 2) == counts["GFLOPs @256"] == table.loc[name, "GFLOPs @256"]
    A.check_no_machine_paths(tmp_path / "results")
    stored = {p: p.read_bytes() for p in A.runs_dir(out).rglob("*.json")}
    shutil.rmtree(tmp_path / "sweeps", ignore_errors=True)
    again = A.render_from_archive(out)  # `avsf report table1_architecture`: the archive is kept as it is
    assert again.out_dir == out and {p: p.read_bytes() for p in A.runs_dir(out).rglob("*.json")} == stored


# --- archiving one run --------------------------------------------------------------------------
def test_an_archived_run_names_no_path_and_keeps_its_hash(tmp_path):
    entry = _fake_run(tmp_path / "sweeps", "sectionA3_per_class_gain", "avslowfast", 0, 42.0)
    src = R.run_dir_of(entry.config, tmp_path / "sweeps")
    assert str(REPO) in (src / "config.json").read_text()  # the trainer's copy holds this machine's paths
    dest = A.archive_run(src, tmp_path / "results" / "nb" / "runs" / src.name)
    # no checkpoints, no logs, no launcher records (host, pid, log paths): the submitted config only
    assert sorted(p.name for p in dest.iterdir()) == sorted([*A.RUN_FILES, A.SUBMITTED_FILE])
    submitted = RunConfig.from_dict(json.loads((dest / A.SUBMITTED_FILE).read_text()))
    assert f"{submitted.name}-{submitted.config_hash()}" == src.name  # the run's name, recomputed
    assert A.find_machine_paths(tmp_path / "results") == []
    cfg = json.loads((dest / "config.json").read_text())
    assert cfg["data"]["synthetic_root"] == "<synthetic>"
    # the archived config is the run's own: it hashes as the trainer's copy does
    original = RunConfig.from_dict(json.loads((src / "config.json").read_text()))
    assert RunConfig.from_dict(cfg).config_hash() == original.config_hash()
    final = json.loads((dest / "final.json").read_text())
    assert final["init_from"]["path"] == "pre-0123456789ab/checkpoints/ckpt-000000008.pt"  # the sibling run, by name
    assert final["top1"] == 42.0
    lines = (dest / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 5 and json.loads(lines[-1])["kind"] == "test"  # the torn line is gone


def test_a_run_restored_from_an_archive_archives_as_before(tmp_path):
    """results/<nb>/runs/<run>/ copied back into a sweep (another table reusing the run) has no
    launch.json: its submitted.json stands for it."""
    entry = _fake_run(tmp_path / "sweeps", "sectionA3_per_class_gain", "avslowfast", 0, 42.0)
    src = R.run_dir_of(entry.config, tmp_path / "sweeps")
    first = A.archive_run(src, tmp_path / "results" / "a" / "runs" / src.name)
    restored = tmp_path / "sweeps2" / src.name
    shutil.copytree(first, restored)
    again = A.archive_run(restored, tmp_path / "results" / "b" / "runs" / src.name)
    assert {p.name: p.read_bytes() for p in again.iterdir()} == {p.name: p.read_bytes() for p in first.iterdir()}


def test_an_offline_gblend_runs_estimate_is_archived_with_it(tmp_path):
    entry = _fake_run(tmp_path / "sweeps", "sectionA3_per_class_gain", "avslowfast", 0, 42.0)
    src = R.run_dir_of(entry.config, tmp_path / "sweeps")
    estimate = {"weights": {"visual": 0.2, "audio": 0.1, "fused": 0.7}, "window_epochs": 4, "held_out": "val"}
    (src / A.GBLEND_FILE).write_text(json.dumps(estimate))
    dest = A.archive_run(src, tmp_path / "results" / "nb" / "runs" / src.name)
    assert json.loads((dest / A.GBLEND_FILE).read_text()) == estimate


def test_an_unfinished_run_is_not_archived(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(UserError, match="no final.json"):
        A.archive_run(tmp_path / "run", tmp_path / "dest")


# --- the check ------------------------------------------------------------------------------------
def test_the_check_finds_a_planted_machine_path(tmp_path):
    results = tmp_path / "results"
    (results / "nb").mkdir(parents=True)
    clean = ("| run | top1 |\n|---|---|\n| avslowfast_tiny-0123 | 40.0 |\n"
             "top-1 / top-5, verb/noun/action, <synthetic>/views/epic, https://arxiv.org/abs/2001.08740, "
             "`/usr/bin/time -v make`\n")
    (results / "nb" / "table.md").write_text(clean)
    A.check_no_machine_paths(results)  # nothing to find
    (results / "nb" / "runs.csv").write_text("row,seed,run_dir\nslowfast,0,/home/alice/avsf/sweeps/slowfast_tiny-0a\n")
    (results / "nb" / "fig.png").write_bytes(b"\x89PNG\x00" + str(REPO).encode() + b"\x00")
    with pytest.raises(UserError) as e:
        A.check_no_machine_paths(results)
    assert "nb/runs.csv:2: '/home/alice/avsf/sweeps/slowfast_tiny-0a'" in str(e.value)
    assert "nb/fig.png" in str(e.value) and "the project's path" in str(e.value)


def test_the_check_finds_this_machines_host_name(tmp_path, monkeypatch):
    monkeypatch.setattr(socket, "gethostname", lambda: "gpu-node-17")
    (tmp_path / "notes.md").write_text("trained on gpu-node-17 overnight\n")
    assert [f.why for f in A.find_machine_paths(tmp_path)] == ["the host name"]


# --- the executed notebook as HTML ------------------------------------------------------------------
PNG_1PX = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8/5+hHgAHggJ/PchI7wAAAABJRU5ErkJggg==")


def _executed_notebook(path: Path, *, sweep: Path, note: str = "") -> None:
    """An executed notebook as papermill leaves it: machine paths in its metadata, the injected
    parameters, the launcher's line, the params repr; the progress widget; a table; a figure."""
    import nbformat

    v4 = nbformat.v4
    cells = [
        v4.new_code_cell(f'# Parameters\nsweep_dir = "{sweep}"\n', metadata={"tags": ["injected-parameters"]}),
        v4.new_code_cell("entries = report.submit_and_wait(params)", outputs=[
            v4.new_output("stream", name="stdout", text=f"avsf.launch: submitted 4 ({sweep})\n"),
            v4.new_output("display_data", data={"application/vnd.jupyter.widget-view+json": {"model_id": "ab"},
                                                "text/plain": "[nb] 4/4 runs finished in 00:10: done 4, failed 0"}),
            v4.new_output("execute_result", data={"text/plain": f"Params(output_dir=PosixPath('{REPO}/results/nb'), "
                                                                 f"home='{Path.home()}/x')"}, execution_count=2)]),
        v4.new_code_cell("display(Markdown(result.markdown))", outputs=[
            v4.new_output("display_data", data={"text/markdown": "| claim | verdict |\n|---|---|\n| A4 | supports |\n",
                                                "text/plain": "<Markdown>"})]),
        v4.new_code_cell("display(Image(...))", outputs=[
            v4.new_output("display_data", data={"image/png": PNG_1PX, "text/plain": "<Image>"})]),
        *([v4.new_markdown_cell(note)] if note else []),
    ]
    nb = v4.new_notebook(cells=cells, metadata={
        "papermill": {"input_path": str(REPO / "notebooks" / "nb.ipynb"), "output_path": str(path),
                      "parameters": {"sweep_dir": str(sweep)}},
        "widgets": {"application/vnd.jupyter.widget-state+json": {"state": {}}}})
    nbformat.write(nb, path)


def test_an_executed_notebook_becomes_one_page_without_machine_paths(tmp_path):
    from avsf.report.notebook_html import notebook_html

    results = tmp_path / "results"
    (results / "_executed").mkdir(parents=True)
    _executed_notebook(results / "_executed" / "nb.ipynb", sweep=tmp_path / "sweeps")
    html = notebook_html(results / "_executed" / "nb.ipynb", results / "nb" / "notebook.html").read_text()
    assert "<table" in html and "supports" in html and f"data:image/png;base64,{PNG_1PX}" in html
    assert "[nb] 4/4 runs finished in 00:10" in html and "widget-view" not in html and "widget-state" not in html
    assert "results/nb" in html and "&lt;path&gt;/sweeps" in html  # the project's paths relative, others by name
    for machine in (str(tmp_path), str(REPO), str(Path.home())):
        assert machine not in html
    A.check_no_machine_paths(results)  # the whole tree, the page included


def test_a_page_that_would_still_name_the_machine_is_not_written(tmp_path, monkeypatch):
    from avsf.report.notebook_html import notebook_html

    monkeypatch.setattr(socket, "gethostname", lambda: "gpu-node-17")
    _executed_notebook(tmp_path / "nb.ipynb", sweep=Path("/scratch/gpu-node-17/sweeps"),  # scrubbed to sweeps
                       note="trained overnight on gpu-node-17")  # no path: nothing to rewrite
    with pytest.raises(UserError, match=r"still names this machine:\n- line \d+: 'gpu-node-17' \(the host name\)"):
        notebook_html(tmp_path / "nb.ipynb", tmp_path / "out" / "notebook.html")
    assert not (tmp_path / "out").exists()
    with pytest.raises(UserError, match="no executed notebook at .*missing.ipynb: run it first, e.g. papermill"):
        notebook_html(tmp_path / "missing.ipynb", tmp_path / "out" / "notebook.html")


# --- a table from results/ alone ----------------------------------------------------------------------
@pytest.mark.parametrize("exp", ["ablate_fusion_stages", "fig3_learning_dynamics", "sectionA3_per_class_gain"])
def test_a_table_regenerates_from_results_alone(tmp_path, exp):
    entries = _grid(tmp_path / "sweeps", exp)
    params = _params(tmp_path, exp)
    first = R.build(params, entries)
    out = first.out_dir
    A.check_no_machine_paths(tmp_path / "results")
    runs = pd.read_csv(out / "runs.csv")
    assert "run_dir" not in runs.columns
    archived = set(A.load_archive(out))
    for name in runs["run"]:  # every cell's run is archived under its own name (two for late fusion)
        assert set(name.split(A.ENSEMBLE_SEP)) <= archived
    assert archived == {R.run_dir_of(e.config, "x").name for e in entries}
    provenance = json.loads((out / A.PROVENANCE_FILE).read_text())
    assert provenance["runs_wall_time_s"] == pytest.approx(65.0 * len(entries))
    assert provenance["commit"][:12] in first.markdown

    committed = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    shutil.rmtree(tmp_path / "sweeps")  # a fresh clone: results/ only
    again = R.build(A.render_only_params(params, entries), entries)
    assert again.markdown == first.markdown
    for name in ("table.csv", "table.md", "rows.csv", "runs.csv", A.PROVENANCE_FILE):
        assert (out / name).read_bytes() == committed[name], name
    assert set(A.load_archive(out)) == archived  # rendering from the archive leaves it whole


def test_render_only_names_the_runs_the_archive_lacks(tmp_path):
    exp = "sectionA3_per_class_gain"
    entries = _grid(tmp_path / "sweeps", exp)
    params = _params(tmp_path, exp)
    with pytest.raises(UserError, match="no archived runs"):
        A.render_only_params(params, entries)
    R.build(params, entries)
    more = entries + [E.GridEntry(exp, "slowfast", 7, E.row_config(exp, "slowfast", scale="smoke", seed=7))]
    with pytest.raises(UserError, match="lacks 1 run"):
        A.render_only_params(params, more)


def test_a_rerun_with_fewer_runs_prunes_the_archive(tmp_path):
    exp = "sectionA3_per_class_gain"
    entries = _grid(tmp_path / "sweeps", exp)
    params = _params(tmp_path, exp)
    R.build(params, entries)
    seed0 = [e for e in entries if e.seed == 0]
    R.build(params, seed0)
    assert set(A.load_archive(params.output_dir)) == {R.run_dir_of(e.config, "x").name for e in seed0}


# --- provenance -----------------------------------------------------------------------------------------
def test_provenance_names_commit_versions_and_machine_but_no_host_or_path():
    record = V.collect_provenance(wall_time_s=12.3)
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert record["commit"] == head and isinstance(record["dirty"], bool)
    assert record["versions"]["torch"] == metadata.version("torch")
    assert set(record["versions"]) == {"python", "torch", "torchvision", "torchaudio", "av"}
    assert record["machine"]["cores"] == os.cpu_count() and record["machine"]["cpu"]
    text = json.dumps(record)
    for secret in (socket.gethostname(), str(REPO), os.path.expanduser("~") + "/"):
        assert f'"{secret}' not in text and f"{secret}\"" not in text
    line = V.provenance_markdown(record)
    assert head[:12] in line and f"torch {metadata.version('torch')}" in line and "12 s" in line


def test_dirty_means_code_changed_not_results(tmp_path):
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "results").mkdir()
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "results" / "table.md").write_text("old\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "c"], check=True)
    assert V.git_state(tmp_path)["dirty"] is False
    (tmp_path / "results" / "table.md").write_text("new\n")
    assert V.git_state(tmp_path)["dirty"] is False
    (tmp_path / "code.py").write_text("x = 2\n")
    assert V.git_state(tmp_path)["dirty"] is True
    assert V.git_state(tmp_path / "results" / "nowhere") == {"commit": V.UNKNOWN, "dirty": None}


def test_avsf_report_renders_from_results_alone_and_checks_paths(tmp_path, capsys):
    from avsf.cli import main

    exp = "ablate_fusion_stages"
    entries = _grid(tmp_path / "sweeps", exp)
    params = _params(tmp_path, exp)
    R.build(params, entries)
    out = Path(params.output_dir)
    committed = {n: (out / n).read_bytes() for n in ("table.csv", "table.md", "rows.csv", "runs.csv")}
    shutil.rmtree(tmp_path / "sweeps")
    (out / "table.md").write_text("stale")
    # entries rebuilt from runs.csv and the archived submitted configs: the grid is not asked
    rebuilt = A.archived_entries(out)
    assert [(e.row, e.seed, e.config.config_hash()) for e in rebuilt] == \
        [(e.row, e.seed, e.config.config_hash()) for e in entries]
    assert main(["report", exp, "--results", str(tmp_path / "results")]) == 0
    assert "names no path" in capsys.readouterr().out
    for name, data in committed.items():
        assert (out / name).read_bytes() == data, name
    # --html: a named table needs its executed notebook, and says where it looked
    assert main(["report", exp, "--results", str(tmp_path / "results"), "--html"]) == 2
    assert f"no executed notebook at {tmp_path / 'results' / '_executed' / exp}.ipynb" in capsys.readouterr().err
    (out / "notes.md").write_text(f"made in {tmp_path}/sweeps\n")
    assert main(["report", "--check-only", "--results", str(tmp_path / "results")]) == 2
    assert "notes.md:1" in capsys.readouterr().err


def test_avsf_report_says_what_is_missing(tmp_path, capsys):
    from avsf.cli import main

    (tmp_path / "results" / "ablate_droppath").mkdir(parents=True)
    assert main(["report", "ablate_droppath", "--results", str(tmp_path / "results")]) == 2
    assert "run the notebook once" in capsys.readouterr().err
    assert main(["report", "no_such_table", "--results", str(tmp_path / "results")]) == 2


def test_gpus_are_named_when_cuda_is_up(monkeypatch):
    import sys
    import types

    cuda = types.SimpleNamespace(is_available=lambda: True, device_count=lambda: 2,
                                 get_device_name=lambda i: "NVIDIA H200")
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    record = V.collect_provenance()
    assert record["machine"]["gpus"] == ["NVIDIA H200", "NVIDIA H200"]
    assert "GPU: 2 x NVIDIA H200" in V.provenance_markdown(record)
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=types.SimpleNamespace(is_available=lambda: False)))
    assert V.gpu_models() == [] and "no GPU" in V.provenance_markdown(V.collect_provenance())


def test_the_default_wall_time_is_the_age_of_the_process():
    age = A.process_wall_time_s()
    assert age is not None and 0.0 < age < 24 * 3600


# --- a trained grid, rendered again from results/ alone -----------------------------------------------
# the notebook tests' quick smoke settings (tests/test_notebooks.py): one seed, one epoch per run, 48 videos
QUICK_SEEDS, QUICK_OVERRIDES = [0], ["solver.epochs=1", "data.limit_videos=48"]


@pytest.mark.slow
def test_a_trained_table_with_late_fusion_renders_again_from_results_alone(tmp_path, one_torch_thread):
    """Table 6's SlowFast and audio-only rows trained (debug backend), their late-fusion row
    evaluated from both checkpoints; then sweeps/ is deleted and the notebook's render-only
    mode (validate_parameters -> submit_and_wait -> build) writes the same files again."""
    from avsf import launch

    exp = "ablate_fusion_stages"
    keep = ("slowfast", "audio_only")  # the late-fusion row's members: the cheapest grid with an ensemble
    entries = [e for e in E.get_grid_entries(exp, scale="smoke", seeds=QUICK_SEEDS, overrides=QUICK_OVERRIDES)
               if e.row in keep]
    configs = [e.config for e in entries]
    E.prepare_data(configs)
    sweep = tmp_path / "sweeps"
    launch.submit(configs, backend="debug", sweep_dir=sweep)
    ns = {"backend": "debug", "cluster": None, "scale": "smoke", "seeds": QUICK_SEEDS, "data_root_kinetics": None,
          "output_dir": str(tmp_path / "results" / exp), "sweep_dir": str(sweep), "max_parallel": 1,
          "overrides": QUICK_OVERRIDES}
    first = R.build(R.validate_parameters(ns, notebook=exp, declared=DECLARED), entries)
    out = first.out_dir
    fused = first.runs[first.runs["row"] == "late_fusion"]
    assert len(fused) == len(QUICK_SEEDS) and fused["top1"].notna().all()  # evaluated from the checkpoints
    cached = sorted(p.name for p in (A.runs_dir(out) / A.LATE_FUSION_DIR).glob("*.json"))
    assert cached == sorted(f"{v}+{a}.json" for v, a in (r.split(" + ") for r in fused["run"]))
    A.check_no_machine_paths(tmp_path / "results")
    committed = {n: (out / n).read_bytes() for n in ("table.csv", "table.md", "rows.csv", "runs.csv")}

    shutil.rmtree(sweep)  # a fresh clone: results/ only, no checkpoints to ensemble
    declared = [*DECLARED, "render_only"]
    with pytest.raises(UserError, match="seeds: archived"):  # another table than the archived one
        R.validate_parameters({**ns, "seeds": [0, 1, 2], "render_only": True}, notebook=exp, declared=declared)
    params = R.validate_parameters({**ns, "backend": "local", "render_only": True}, notebook=exp, declared=declared)
    assert params.render_only and params.backend == "debug"  # the backend that made the runs, as recorded
    again = R.build(params, R.submit_and_wait(params))
    assert not sweep.exists()  # nothing was submitted
    for name, data in committed.items():
        assert (out / name).read_bytes() == data, name
    assert again.markdown == first.markdown
