"""The smoke recipe's criteria (avsf.engine.recipe_check, `avsf bench recipe`) on hand-made
curves: the check itself. Whether the presets meet them is measured by the benchmark, whose
numbers are in docs/SMOKE_RECIPE.md; tests/test_premise.py trains the Fig. 3 premise."""

import json

from avsf.engine import recipe_check as R


def _run(tmp_path, name, *, train, val, test, wait=0.1, compute=1.0):
    run = tmp_path / name
    run.mkdir()
    lines = [{"kind": "epoch", "epoch": i + 1, "train_top1": t, "val_top1": v, "wall_time_s": 10.0 * (i + 1),
              "data_wait_s": wait, "compute_s": compute} for i, (t, v) in enumerate(zip(train, val))]
    lines.append({"kind": "test", "test_top1": test})
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (run / "final.json").write_text(json.dumps({"top1": test, "test_wall_time_s": 2.0}))
    return run


def _grid(tmp_path, *, av_test=70.0, audio_val=(30, 40, 35)):
    dirs = {}
    for seed in (0, 1, 2):
        dirs[(R.AV, seed)] = _run(tmp_path, f"av{seed}", train=[50, 80, 95], val=[40, 60, 70], test=av_test)
        dirs[(R.VISUAL, seed)] = _run(tmp_path, f"v{seed}", train=[30, 45, 55], val=[30, 45, 52], test=50.0)
        dirs[(R.AUDIO, seed)] = _run(tmp_path, f"a{seed}", train=[40, 60, 70], val=list(audio_val), test=35.0)
    return dirs


def test_a_recipe_that_meets_every_criterion(tmp_path):
    result = R.summarize(_grid(tmp_path))
    assert result["all_ok"], result["checks"]
    assert result["premise"][0] == {"audio_gap": 35.0, "visual_gap": 3.0, "audio_val_peak_epoch": 2,
                                    "audio_last_epoch": 3, "gap_holds": True, "peak_holds": True, "holds": True}
    assert abs(result["checks"]["data_wait_frac"]["value"] - 0.1 / 1.1) < 1e-9


def test_each_failed_criterion_is_named(tmp_path):
    weak = R.summarize(_grid(tmp_path, av_test=52.0))
    assert not weak["all_ok"]
    assert {k for k, c in weak["checks"].items() if not c["ok"]} == {"av_test_top1", "av_minus_slowfast_tiny"}
    (tmp_path / "late").mkdir()
    late = R.summarize(_grid(tmp_path / "late", audio_val=(30, 35, 40)))
    assert not late["all_ok"] and not late["premise"][0]["peak_holds"] and late["premise"][0]["gap_holds"]
    assert "NOT MET" in R.format_report(late)
