"""avsf.report: parameter validation, verdicts, tables from run directories, plots."""

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from avsf import experiments as E
from avsf import report as R
from avsf.errors import UserError

DECLARED = ["backend", "cluster", "scale", "seeds", "data_root_kinetics", "output_dir", "sweep_dir", "max_parallel",
            "overrides"]


def _namespace(tmp_path, **changes):
    ns = {"backend": "local", "cluster": None, "scale": "smoke", "seeds": [0, 1], "data_root_kinetics": None,
          "output_dir": str(tmp_path / "out"), "sweep_dir": str(tmp_path / "sweeps"), "max_parallel": 2,
          "overrides": []}
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


# --- the verdict rule ---------------------------------------------------------------------------
@pytest.mark.parametrize("ours, noise, claimed, n, expected", [
    (1.5, 0.3, "+1.4", 3, "yes"),
    (0.5, 0.1, "+1.4", 3, "direction only (size x0.36)"),
    (5.0, 0.1, "+1.4", 3, "direction only (size x3.6)"),
    (-1.0, 0.2, "+1.4", 3, "no"),
    (0.2, 0.5, "+1.4", 3, "within noise"),
    (-0.3, 0.1, "-0.4", 2, "yes"),
    (-0.3, 0.1, "lower", 2, "yes"),
    (0.3, 0.1, "lower", 2, "no"),
    (0.01, 0.0, "slightly higher", 2, "yes"),
    (1.4, float("nan"), "+1.4", 1, "yes (1 seed: noise unknown)"),
    (float("nan"), 0.1, "+1.4", 2, "not run at this scale"),
])
def test_verdict_rule(ours, noise, claimed, n, expected):
    assert R.verdict(ours, noise, claimed=claimed, n_seeds=n) == expected


def test_claim_numbers_and_directions_parse():
    assert R.parse_number("+11%") == 11.0 and R.parse_number("~+1.2") == 1.2 and R.parse_number("lower") is None
    assert R.expected_sign("lower") == -1 and R.expected_sign("-0.2") == -1 and R.expected_sign("+0.6") == 1
    assert R.expected_sign("slightly higher") == 1 and R.expected_sign("up then down at 1") == 0
    assert R.compute_verdict(11.2, "+11%") == "yes" and R.compute_verdict(20.0, "+11%") == "no"


# --- tables from run directories ----------------------------------------------------------------
def _fake_runs(sweep: Path, exp: str, values: dict[str, list[float]]):
    """Run directories holding only what a finished run's final.json and metrics.jsonl hold."""
    entries = []
    for row, tops in values.items():
        for seed, top1 in enumerate(tops):
            cfg = E.row_config(exp, row, scale="smoke", seed=seed)
            d = R.run_dir_of(cfg, sweep)
            d.mkdir(parents=True)
            per_class = {"door closing": top1 + 10 * seed, "six shaking": top1 - 5}
            (d / "final.json").write_text(json.dumps({"top1": top1, "top5": 100.0, "per_class_accuracy": per_class,
                                                      "params": 1000, "gflops": 1.0, "views": 2}))
            lines = [{"kind": "epoch", "epoch": e, "train_loss": 3.0 / e, "train_top1": 10.0 * e,
                      "val_top1": top1 - abs(e - 2 - seed)} for e in range(1, 5)]
            lines.append({"kind": "test", "epoch": 4, "test_top1": top1})
            (d / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"torn')
            entries.append(E.GridEntry(exp, row, seed, cfg))
    return entries


def test_tables_compute_mean_std_and_verdicts_from_the_runs(tmp_path):
    values = {"slowfast": [50.0, 52.0], "dp_none": [48.0, 49.0], "dp_0.5": [55.0, 55.0], "avslowfast": [53.0, 54.0]}
    entries = _fake_runs(tmp_path, "ablate_droppath", values)
    runs = R.collect("ablate_droppath", entries, tmp_path)
    assert runs["finished"].all() and len(runs) == 8
    summary = R.summarize("ablate_droppath", runs, scale="smoke")
    sf = summary.set_index("row").loc["slowfast"]
    assert sf["top1_mean"] == pytest.approx(51.0) and sf["top1_std"] == pytest.approx(math.sqrt(2.0))
    claims = R.claims_table("ablate_droppath", summary, scale="smoke").set_index("claim")
    # A4: dp_none -> default: +5.0 vs claimed +1.8 (x2.8): the direction held, not the size
    assert claims.loc["A4", "ours_delta"] == "+5.0"
    assert claims.loc["A4", "held"] == "direction only (size x2.8)"
    # A5: slowfast -> dp_none: -2.5 vs claimed -0.4
    assert claims.loc["A5", "ours_delta"] == "-2.5" and claims.loc["A5", "held"].startswith("direction only")
    assert claims.loc["A5", "paper_baseline"] == "SlowFast (visual only) 75.6"
    table = R.rows_table("ablate_droppath", summary)
    assert table.set_index("row").loc["dp_0.5", "top1"] == "55.0 ± 0.0"


def test_unfinished_rows_say_so(tmp_path):
    entries = _fake_runs(tmp_path, "ablate_lateral", {"a_fs": [50.0, 51.0]})
    entries.append(E.GridEntry("ablate_lateral", "a_f_s", 0, E.row_config("ablate_lateral", "a_f_s", scale="smoke", seed=0)))
    runs = R.collect("ablate_lateral", entries, tmp_path)
    assert runs.set_index("row").loc["a_f_s", "finished"] == False  # noqa: E712
    claims = R.claims_table("ablate_lateral", R.summarize("ablate_lateral", runs, scale="smoke"), scale="smoke")
    assert set(claims["held"]) == {"not run at this scale"}


def test_compute_claims_count_the_paper_models():
    exp = E.get_experiment("table3_kinetics")
    claims = R.claims_table(exp, pd.DataFrame(columns=["row"]), scale="smoke").set_index("claim")
    # the audio pathway's overhead on SlowFast 4x16 R50 is about 11 % (REFERENCE.md: 40.41 / 36.34)
    assert claims.loc["K3", "held"] == "yes"
    assert float(claims.loc["K3", "ours_delta"].rstrip("%")) == pytest.approx(100 * (40.41 / 36.34 - 1), abs=0.3)
    assert claims.loc["K1", "held"] == "not run at this scale"
    assert claims.loc["P1", "held"] == "not testable here"


def test_curves_per_class_and_plots(tmp_path):
    entries = _fake_runs(tmp_path / "sweeps", "figA1_per_class_gain", {"slowfast": [40.0, 42.0], "avslowfast": [45.0, 47.0]})
    runs = R.collect("figA1_per_class_gain", entries, tmp_path / "sweeps")
    curves = R.curves_of("figA1_per_class_gain", runs)
    assert set(curves["split"]) == {"train", "val"} and set(curves["metric"]) == {"loss", "top1"}
    assert "test" not in set(curves["split"])
    # val peaks at epoch 2 for seed 0 and 3 for seed 1: the mean peaks at one of them
    assert R.overfit_epoch(curves, "slowfast") in (2.0, 3.0)
    gains = R.per_class_gains(list(runs[runs.row == "slowfast"].run_dir), list(runs[runs.row == "avslowfast"].run_dir))
    assert gains.to_dict() == pytest.approx({"door closing": 5.0, "six shaking": 5.0})
    summary = R.summarize("figA1_per_class_gain", runs, scale="smoke")
    for fn, kw in ((R.plot_ablation_bars, {"summary": summary, "metric": "top1"}),
                   (R.plot_learning_curves, {"curves": curves, "metric": "top1"})):
        path = tmp_path / f"{fn.__name__}.png"
        R._close(fn("figA1_per_class_gain", **kw, path=path))
        assert path.read_bytes()[:4] == b"\x89PNG"
    path = tmp_path / "gain.png"
    R._close(R.plot_per_class_gain(gains, path=path, title="t"))
    assert path.stat().st_size > 1000


def test_build_renders_every_file(tmp_path):
    values = {"slowfast": [40.0, 41.0], "avslowfast": [45.0, 47.0]}
    entries = _fake_runs(tmp_path / "sweeps", "figA1_per_class_gain", values)
    params = R.validate_parameters(_namespace(tmp_path), notebook="figA1_per_class_gain", declared=DECLARED)
    result = R.build(params, entries)
    out = tmp_path / "out"
    assert {p.name for p in out.iterdir()} >= {"table.csv", "table.md", "rows.csv", "runs.csv", "per_class_gain.png"}
    table = pd.read_csv(out / "table.csv").set_index("claim")
    assert table.loc["P3", "held"] == "not comparable: the paper's classes are not in this dataset"
    assert "door closing +" in table.loc["P3", "ours_delta"]
    assert "Verdict rule" in result.markdown and "| slowfast |" in result.markdown
