"""avsf.report: parameter validation, tables and verdicts from run directories, plots, compute."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from avsf import experiments as E
from avsf import report as R
from avsf.report import plots as P
from avsf.report import stats as S
from avsf.report.collect import grid_run_dirs
from avsf.errors import UserError

DECLARED = ["backend", "cluster", "scale", "seeds", "data_root_kinetics", "output_dir", "sweep_dir", "max_parallel",
            "overrides", "render_only"]


def _namespace(tmp_path, **changes):
    ns = {"backend": "local", "cluster": None, "scale": "smoke", "seeds": [0, 1], "data_root_kinetics": None,
          "output_dir": str(tmp_path / "out"), "sweep_dir": str(tmp_path / "sweeps"), "max_parallel": 2,
          "overrides": [], "render_only": False}
    ns.update(changes)
    return ns


# --- parameters ---------------------------------------------------------------------------------
def test_injected_names_come_from_papermills_cell_only():
    history = ["", "backend = 'local'  # where\nseeds = [0]", "# Parameters\nseeds = [3]\nsede = 4\n",
               "from avsf import report"]
    assert R.injected_parameter_names(history) == ["seeds", "sede"]
    assert R.injected_parameter_names(["x = 1"]) == [] and R.injected_parameter_names(None) == []


def test_unknown_parameter_is_refused_naming_the_declared_ones(tmp_path):
    ns = _namespace(tmp_path, sede=4)
    with pytest.raises(UserError, match=r"unknown parameter\(s\) sede .*declared parameters: backend, cluster"):
        R.validate_parameters(ns, notebook="ablate_droppath", declared=DECLARED,
                              history=["# Parameters\nsede = 4\n"])


@pytest.mark.parametrize("change, message", [
    ({"backend": "cloud"}, "choose one of debug, local, slurm"),
    ({"scale": "tiny"}, "choose one of smoke, small, paper"),
    ({"backend": "slurm"}, "needs a cluster profile"),
    ({"seeds": []}, "seeds"),
    ({"max_parallel": 0}, "positive integer"),
    ({"data_root_kinetics": "/no/such/kinetics"}, "no such folder /no/such/kinetics"),
    ({"scale": "paper"}, r"data_roots\['kinetics'\]"),
    ({"overrides": ["solver.epochs"]}, "list of 'section.key=value' strings"),
    ({"overrides": ["solver.epoch=2"]}, "unknown config key 'solver.epoch'"),
    ({"render_only": "yes"}, "must be True or False"),
    # render-only needs the table's record, not the data (the paper scale asks for no data root)
    ({"scale": "paper", "render_only": True}, "provenance.json is missing"),
])
def test_bad_values_are_named(tmp_path, change, message):
    with pytest.raises(UserError, match=message):
        R.validate_parameters(_namespace(tmp_path, **change), notebook="ablate_droppath", declared=DECLARED)


def test_valid_parameters_resolve_paths(tmp_path):
    p = R.validate_parameters(_namespace(tmp_path, seeds="0,1", output_dir="results/x"), notebook="ablate_droppath",
                              declared=DECLARED, history=["# Parameters\nseeds = '0,1'\n"])
    assert p.seeds == [0, 1] and p.backend == "local" and p.sweep_dir == tmp_path / "sweeps"
    assert p.output_dir == E.project_root() / "results" / "x"
    quick = R.validate_parameters(_namespace(tmp_path, overrides=["solver.epochs=2"], output_dir=None,
                                             scale="small"), notebook="ablate_droppath", declared=DECLARED)
    assert quick.output_dir == E.project_root() / "results" / "ablate_droppath" / "small"
    entries = E.get_grid_entries("ablate_droppath", scale="smoke", seeds=[0], overrides=quick.overrides)
    assert {e.config.solver.epochs for e in entries} == {2}
    with pytest.raises(UserError, match="did not set max_parallel"):
        ns = _namespace(tmp_path)
        del ns["max_parallel"]
        R.validate_parameters(ns, notebook="ablate_droppath", declared=DECLARED)


# --- claim texts -------------------------------------------------------------------------------
def test_claim_numbers_and_directions_parse():
    assert R.parse_number("+11%") == 11.0 and R.parse_number("~+1.2") == 1.2 and R.parse_number("lower") is None
    assert R.expected_sign("lower") == -1 and R.expected_sign("-0.2") == -1 and R.expected_sign("+0.6") == 1
    assert R.expected_sign("slightly higher") == 1 and R.expected_sign("up then down at 1") == 0


# --- tables from run directories ----------------------------------------------------------------
def _fake_runs(sweep: Path, exp: str, values: dict[str, list[float]], *, num_classes: int = 20):
    """Run directories holding only what a finished run's final.json, config.json and
    metrics.jsonl hold (metric names as avsf.engine.evaluate writes them)."""
    entries = []
    for row, tops in values.items():
        for seed, top1 in enumerate(tops):
            cfg = E.row_config(exp, row, scale="smoke", seed=seed)
            d = R.run_dir_of(cfg, sweep)
            d.mkdir(parents=True)
            per_class = {"door closing": top1 + 10 * seed, "six shaking": top1 - 5}
            (d / "final.json").write_text(json.dumps({"top1": top1, "top5": 100.0, "per_class_accuracy": per_class,
                                                      "params": 1000 + seed, "gflops": 1.0, "gflops_audio": 0.2,
                                                      "views": 2}))
            (d / "config.json").write_text(json.dumps({"model": {"num_classes": num_classes}}))
            lines = [{"kind": "epoch", "epoch": e, "train_loss": 3.0 / e, "train_loss_task": 2.5 / e,
                      "train_top1": 10.0 * e, "val_top1": top1 - abs(e - 2 - seed), "val_loss_task": 2.0 + 0.1 * e}
                     for e in range(1, 7)]
            lines.append({"kind": "test", "epoch": 6, "test_top1": top1})
            (d / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"torn')
            entries.append(E.GridEntry(exp, row, seed, cfg))
    return entries


def test_tables_pair_seeds_and_judge_with_intervals(tmp_path):
    # dp_none -> default: +5, +6, +5.5 paired (clear); slowfast -> dp_none: noise around 0
    values = {"slowfast": [50.0, 52.0, 47.0], "dp_none": [48.0, 53.0, 46.0], "dp_0.5": [55.0, 55.0, 54.0],
              "avslowfast": [53.0, 59.0, 51.5]}
    entries = _fake_runs(tmp_path, "ablate_droppath", values)
    runs = R.collect("ablate_droppath", entries, tmp_path)
    assert runs["finished"].all() and len(runs) == 12 and set(runs["run"]) == set(grid_run_dirs(entries, tmp_path))
    summary = R.summarize("ablate_droppath", runs, scale="smoke")
    sf = summary.set_index("row").loc["slowfast"]
    assert sf["top1_mean"] == pytest.approx(np.mean(values["slowfast"])) and sf["top1_std"] == pytest.approx(np.std([50, 52, 47], ddof=1))
    claims = R.claims_table("ablate_droppath", runs, scale="smoke")
    assert list(claims["claim"]) == E.claim_ids("ablate_droppath") == ["A4", "A4", "A5"]
    for col in ("ci_low", "ci_high", "mde", "verdict", "p_holm"):
        assert col in claims.columns
    a4_05, a4_08, a5 = (claims.iloc[i] for i in range(3))
    assert a4_08["comparison"] == "P_d = 0.8" and a4_08["ours_delta"] == "+5.5"
    d = np.array([5.0, 6.0, 5.5])
    ps = S.paired_stats(d)
    assert (a4_08["ci_low"], a4_08["ci_high"]) == pytest.approx((ps.ci_low, ps.ci_high))
    assert a4_08["verdict"] == "supports"  # Holm over 3 tests: 3 x p is still < 0.05
    assert a4_08["p_holm"] >= a4_08["p"] and a4_08["size"] == "not judged below the paper scale"
    assert a5["verdict"].startswith("inconclusive")  # the paper's -0.4 is in the noise
    assert a5["paper_baseline"] == "SlowFast (visual only) 75.6"
    # Holm order: the smallest raw p is multiplied by the number of tests (3)
    raw = claims["p"].to_numpy(dtype=float)
    assert claims["p_holm"].to_numpy(dtype=float)[raw.argmin()] == pytest.approx(min(1.0, 3 * raw.min()))
    table = R.rows_table("ablate_droppath", summary)
    assert table.set_index("row").loc["dp_0.5", "top1"] == "54.7 ± 0.6"


def test_two_seeds_never_give_a_direction(tmp_path):
    entries = _fake_runs(tmp_path, "ablate_droppath", {"slowfast": [50.0, 52.0], "dp_none": [40.0, 41.0],
                                                        "dp_0.5": [50.0, 50.0], "avslowfast": [60.0, 62.0]})
    claims = R.claims_table("ablate_droppath", R.collect("ablate_droppath", entries, tmp_path), scale="smoke")
    assert all(v.startswith("inconclusive (2 seeds)") for v in claims["verdict"])


def test_unpaired_seeds_are_left_out(tmp_path):
    entries = _fake_runs(tmp_path, "ablate_lateral", {"a_fs": [50.0, 51.0, 52.0], "av_nonlocal": [50.2, 51.1]})
    runs = R.collect("ablate_lateral", entries, tmp_path)
    claims = R.claims_table("ablate_lateral", runs, scale="smoke").set_index("claim")
    assert claims.loc["A1", "seeds"] == 2 and "TOST margin ±0.5" in claims.loc["A1", "note"]
    assert claims.loc["A1", "verdict"].startswith("inconclusive (2 seeds)")


def test_unfinished_rows_say_so(tmp_path):
    entries = _fake_runs(tmp_path, "ablate_lateral", {"a_fs": [50.0, 51.0]})
    entries.append(E.GridEntry("ablate_lateral", "a_f_s", 0, E.row_config("ablate_lateral", "a_f_s", scale="smoke", seed=0)))
    runs = R.collect("ablate_lateral", entries, tmp_path)
    assert runs.set_index("row").loc["a_f_s", "finished"] == False  # noqa: E712
    claims = R.claims_table("ablate_lateral", runs, scale="smoke")
    assert set(claims["verdict"]) == {"not run at this scale"}


def test_compute_claims_count_the_paper_models():
    exp = E.get_experiment("table3_kinetics")
    claims = R.claims_table(exp, pd.DataFrame(columns=["row", "seed", "finished"]), scale="smoke").set_index("claim")
    # the audio pathway's overhead on SlowFast 4x16 R50 is about 11 % (REFERENCE.md: 40.41 / 36.34)
    assert claims.loc["K3", "verdict"] == "supports"
    assert float(claims.loc["K3", "ours_delta"].rstrip("%")) == pytest.approx(100 * (40.41 / 36.34 - 1), abs=0.3)
    assert claims.loc["K1", "verdict"] == "not run at this scale"
    assert claims.loc["P1", "verdict"] == "not testable here"


def test_the_trained_model_is_counted_not_a_400_class_head():
    from avsf.engine.evaluate import compute_cost
    from avsf.flops import count_model
    from avsf.presets import get_preset
    from avsf.report.architecture import counted_model

    tiny = get_preset("avslowfast_tiny")
    assert tiny.model.num_classes == 0
    with pytest.raises(ValueError, match="num_classes=0"):
        count_model(tiny.model, 32)
    twenty, four_hundred = (tiny.with_overrides([f"model.num_classes={k}"]) for k in (20, 400))
    assert counted_model(tiny).num_classes == 20
    c20, c400 = compute_cost(twenty), compute_cost(four_hundred)
    assert c400["params"] > c20["params"] and 0 < c20["gflops_audio"] < c20["gflops"]


def test_collect_reads_the_names_the_evaluator_writes():
    """Writers and readers agree: every metric an experiment tabulates is a key the engine's
    evaluator writes for its head (no alias table in between)."""
    import torch

    from avsf.engine.tasks.classify import summarize as evaluate_summary

    vid = torch.arange(4)
    labels = torch.tensor([0, 1, 2, 0])
    scores = torch.eye(3)[labels].float()
    written = set(evaluate_summary({"video_index": vid, "scores": scores, "label": labels}, head="softmax"))
    written |= set(evaluate_summary({"video_index": vid, "scores": scores, "label": torch.eye(3)[labels]},
                                    head="sigmoid"))
    written |= set(evaluate_summary({"video_index": vid, "verb_scores": scores, "noun_scores": scores,
                                     "verb": labels, "noun": labels}, head="epic"))
    written |= {"rot_top1", "loss_rot", "loss_avs"}  # avsf.engine.tasks.pretrain.PretrainTask.evaluate
    for name in E.list_experiments():
        missing = set(E.get_experiment(name).metrics) - written
        assert not missing, f"{name}: {missing} is never written to final.json"


def test_curves_per_class_and_plots(tmp_path):
    entries = _fake_runs(tmp_path / "sweeps", "sectionA3_per_class_gain", {"slowfast": [40.0, 42.0], "avslowfast": [45.0, 47.0]})
    runs = R.collect("sectionA3_per_class_gain", entries, tmp_path / "sweeps")
    curves = R.curves_of(runs, grid_run_dirs(entries, tmp_path / "sweeps"))
    assert set(curves["split"]) == {"train", "val"} and {"loss_task", "top1"} <= set(curves["metric"])
    assert "test" not in set(curves["split"])
    # val peaks at epoch 2 for seed 0 and 3 for seed 1: the mean peaks at one of them
    assert R.overfit_epoch(curves, "slowfast") in (2.0, 3.0)
    dirs = grid_run_dirs(entries, tmp_path / "sweeps")
    gains = R.per_class_gains([dirs[r] for r in runs[runs.row == "slowfast"].run],
                              [dirs[r] for r in runs[runs.row == "avslowfast"].run])
    assert gains.to_dict() == pytest.approx({"door closing": 5.0, "six shaking": 5.0})
    summary = R.summarize("sectionA3_per_class_gain", runs, scale="smoke")
    assert summary.set_index("row").loc["slowfast", "top1_ci"] == pytest.approx(
        12.706 * math.sqrt(2.0) / math.sqrt(2), rel=1e-3)  # t_{0.975,1} sd / sqrt(2)
    for fn, kw in ((P.plot_bars, {"summary": summary, "metric": "top1", "runs": runs}),
                   (P.plot_learning_curves, {"curves": curves, "metric": "loss_task"})):
        path = tmp_path / f"{fn.__name__}.png"
        fig = fn("sectionA3_per_class_gain", **kw, path=path)
        if fn is P.plot_bars:
            ax = fig.axes[0]
            assert ax.get_ylim()[0] == 0  # bars start at 0
            assert any(abs(line.get_ydata()[0] - 5.0) < 1e-9 for line in ax.lines)  # chance 100 / 20 classes
            assert ax.get_ylim()[1] > 77.0  # the paper's 77.0 (K1's AVSlowFast) is marked and visible
        P.close(fig)
        assert path.read_bytes()[:4] == b"\x89PNG"
    path = tmp_path / "gain.png"
    P.close(P.plot_per_class_gain(gains, path=path, title="t"))
    assert path.stat().st_size > 1000


def test_run_curves_show_each_rows_mean_and_its_95_interval_over_seeds(tmp_path):
    entries = _fake_runs(tmp_path / "sweeps", "sectionA3_per_class_gain", {"slowfast": [40.0, 42.0], "avslowfast": [45.0, 47.0]})
    runs = R.collect("sectionA3_per_class_gain", entries, tmp_path / "sweeps")
    curves = R.curves_of(runs, grid_run_dirs(entries, tmp_path / "sweeps"))
    assert P.curve_metrics(E.get_experiment("sectionA3_per_class_gain"), curves) == ["top1", "loss_task"]
    fig = P.plot_run_curves("sectionA3_per_class_gain", curves, path=tmp_path / "curves.png")
    top1, loss = fig.axes[:2]
    assert (top1.get_title(), loss.get_title()) == ("top-1 (%)", "task loss")
    assert len(top1.lines) == len(loss.lines) == 4  # two rows x train, val
    # slowfast's val top-1 at epoch 1 over seeds 0, 1: 39 and 40; band: t_{0.975,1} sd / sqrt(2)
    half = 12.706 * np.std([39.0, 40.0], ddof=1) / math.sqrt(2)
    bands = [c.get_paths()[0].vertices for c in top1.collections]
    at_1 = [(v[v[:, 0] == 1.0, 1].min(), v[v[:, 0] == 1.0, 1].max()) for v in bands]
    assert any(lo == pytest.approx(39.5 - half, rel=1e-3) and hi == pytest.approx(39.5 + half, rel=1e-3)
               for lo, hi in at_1), at_1
    P.close(fig)
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_chance_levels_come_from_the_class_counts():
    runs = pd.DataFrame({"row": ["a", "b"], "num_classes": [20, 20], "num_verbs": [10, 10], "num_nouns": [4, 4]})
    assert P.chance_level("top1", runs, ["a", "b"]) == 5.0 and P.chance_level("top5", runs, ["a"]) == 25.0
    assert P.chance_level("action_top1", runs, ["a"]) == 2.5 and P.chance_level("map", runs, ["a"]) is None


def test_largest_gains_and_losses_are_split():
    from avsf.report.build import split_gains

    gains = pd.Series({"a": 3.0, "b": 1.0, "c": -0.5, "d": -4.0}).sort_values(ascending=False)
    top, bottom = split_gains(gains, count=5)
    assert list(top.index) == ["a", "b"] and list(bottom.index) == ["d", "c"]


def test_build_renders_every_file(tmp_path):
    values = {"slowfast": [40.0, 41.0, 39.0], "avslowfast": [45.0, 47.0, 46.5]}
    entries = _fake_runs(tmp_path / "sweeps", "sectionA3_per_class_gain", values)
    params = R.validate_parameters(_namespace(tmp_path), notebook="sectionA3_per_class_gain", declared=DECLARED)
    result = R.build(params, entries)
    out = tmp_path / "out"
    assert {p.name for p in out.iterdir()} >= {"table.csv", "table.md", "rows.csv", "runs.csv", "per_class_gain.png"}
    table = pd.read_csv(out / "table.csv").set_index("claim")
    assert {"ci_low", "ci_high", "mde", "verdict"} <= set(table.columns)
    assert table.loc["P3", "verdict"] == "not comparable: the paper's classes are not in this dataset"
    assert "door closing +" in table.loc["P3", "ours_delta"]
    assert "six shaking" not in str(table.loc["P4", "ours_delta"])  # P4 names losses only: there are none
    assert "Verdict rule" in result.markdown and "Holm" in result.markdown and "| slowfast |" in result.markdown
    assert str(tmp_path) not in (out / "runs.csv").read_text()  # runs are named, not located


def test_forest_plot_and_bars_for_every_metric(tmp_path):
    values = {"slowfast": [50.0, 52.0, 47.0], "dp_none": [48.0, 53.0, 46.0], "dp_0.5": [55.0, 55.0, 54.0],
              "avslowfast": [53.0, 59.0, 51.5]}
    entries = _fake_runs(tmp_path / "sweeps", "ablate_droppath", values)
    params = R.validate_parameters(_namespace(tmp_path, seeds=[0, 1, 2]), notebook="ablate_droppath", declared=DECLARED)
    result = R.build(params, entries)
    names = [f.name for f in result.figures]
    assert names[0] == "forest.png" and {"bars_top1.png", "bars_top5.png", "curves.png"} <= set(names)
    # the notebook shows the figures themselves; table.md links them, relative to its folder
    assert "![" not in result.markdown
    assert all(f"![{f.stem}]({f.name})" in (tmp_path / "out" / "table.md").read_text() for f in result.figures)
    assert "ci_low" in result.markdown and "supports" in result.markdown
