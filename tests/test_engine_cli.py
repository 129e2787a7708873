"""`avsf train` / `avsf test` on bad input: one line on stderr saying what to do, exit code 2."""

import json

import pytest

from avsf.cli import main
from test_engine_fakes import install

FAST = ["--set", "solver.epochs=1", "--set", "solver.batch_size=4", "--set", "data.num_workers=0"]


def _one_line_error(capsys, argv, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, err
    return err


def test_unknown_set_key(capsys, tmp_path):
    _one_line_error(capsys, ["train", "--preset", "slowfast_tiny", "--out", str(tmp_path / "r"),
                             "--set", "solver.epoch=3"], "unknown config key", "solver.epoch", "epochs")


def test_wrong_type(capsys, tmp_path):
    _one_line_error(capsys, ["train", "--preset", "slowfast_tiny", "--out", str(tmp_path / "r"),
                             "--set", "solver.epochs=many"], "solver.epochs", "as int")


def test_data_dir_without_csv(capsys, tmp_path):
    (tmp_path / "data").mkdir()
    _one_line_error(capsys, ["train", "--preset", "slowfast_tiny", "--data", str(tmp_path / "data"),
                             "--out", str(tmp_path / "r")], "train.csv", str(tmp_path / "data"))
    _one_line_error(capsys, ["train", "--preset", "slowfast_tiny", "--data", str(tmp_path / "nowhere"),
                             "--out", str(tmp_path / "r")], "no such directory")


def test_test_without_a_run(capsys, tmp_path):
    _one_line_error(capsys, ["test", "--run", str(tmp_path)], "config.json", "avsf train")
    _one_line_error(capsys, ["test", str(tmp_path)], "config.json", "avsf train")
    _one_line_error(capsys, ["test"], "one run directory", "avsf test RUN_DIR")
    _one_line_error(capsys, ["test", str(tmp_path), "--run", str(tmp_path)], "one run directory")


def test_torchrun_leaves_the_run_directory_to_avsf_test(capsys):
    """torchrun's parser takes --run as an abbreviation of its --run-path (issue 19: `torchrun ...
    -m avsf test --run DIR` failed before it started); a positional RUN_DIR reaches avsf."""
    from torch.distributed.run import get_args_parser

    with pytest.raises(SystemExit):
        get_args_parser().parse_args(["--nproc_per_node", "2", "-m", "avsf", "test", "--run", "r"])
    assert "--run could match --run-path" in capsys.readouterr().err
    kept = get_args_parser().parse_args(["--nproc_per_node", "2", "-m", "avsf", "test", "r"])
    assert kept.training_script_args == ["test", "r"]


def test_run_dir_with_another_config_is_refused_unless_fresh(capsys, tmp_path, monkeypatch):
    install(monkeypatch)
    out = str(tmp_path / "run")
    assert main(["train", "--preset", "slowfast_tiny", "--out", out, "--json", *FAST]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["epochs"] == 1
    _one_line_error(capsys, ["train", "--preset", "slowfast_tiny", "--out", out, *FAST, "--set", "seed=5"],
                    "different config", "seed", "--fresh")
    assert main(["train", "--preset", "slowfast_tiny", "--out", out, *FAST, "--set", "seed=5", "--fresh"]) == 0
    assert "top1" in capsys.readouterr().out
    assert json.loads((tmp_path / "run" / "config.json").read_text())["seed"] == 5
    # `avsf test` re-tests the newest checkpoint and gives the same metrics
    assert main(["test", out, "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    saved = json.loads((tmp_path / "run" / "final.json").read_text())
    assert again["top1"] == saved["top1"] and again["seed"] == 5
    # what the numbers may depend on besides the config: the torch build, the CPU, the thread count (issue 17)
    import torch

    env = saved["environment"]
    assert env["torch"] == torch.__version__ and env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert 1 <= env["torch_threads"] <= torch.get_num_threads() and env["cpu"]
