import json

import pytest

from avsf.cli import main
from avsf.config import ConfigError, RunConfig
from avsf.presets import get_preset, list_presets


def test_every_preset_roundtrips_through_json_and_hashes_stably():
    for name in list_presets():
        cfg = get_preset(name)
        again = RunConfig.from_dict(json.loads(cfg.to_json()))
        assert again == cfg, name
        assert again.config_hash() == cfg.config_hash()


def test_hash_changes_with_any_field():
    cfg = get_preset("avslowfast_tiny")
    assert cfg.with_overrides(["model.droppathway_rate=0.5"]).config_hash() != cfg.config_hash()
    assert cfg.with_overrides(["seed=1"]).config_hash() != cfg.config_hash()


def test_overrides_are_typed():
    cfg = get_preset("avslowfast_tiny").with_overrides(
        ["model.av_fusion_stages=res2,res3", "solver.epochs=3", "model.pool5_fusion=false",
         "data.train_jitter=[60,70]"])
    assert cfg.model.av_fusion_stages == ("res2", "res3")
    assert cfg.solver.epochs == 3 and cfg.model.pool5_fusion is False
    assert cfg.data.train_jitter == (60, 70)


@pytest.mark.parametrize("override, needle", [
    ("model.nope=1", "unknown config key 'model.nope'"),
    ("solver.epochs=abc", "cannot read 'abc' as int"),
    ("model.av_lateral=sideways", "choose one of a_fs, a_f_s, av_nonlocal"),
    ("model.droppathway_rate=1.5", "must be in [0, 1)"),
    ("model", "section.key=value"),
])
def test_bad_overrides_name_what_is_allowed(override, needle):
    with pytest.raises(ConfigError) as e:
        get_preset("avslowfast_tiny").with_overrides([override])
    assert needle in str(e.value)


def test_unknown_preset_lists_the_known_ones(capsys):
    assert main(["presets", "avslowfast_r9000"]) == 2
    err = capsys.readouterr().err
    assert "unknown preset 'avslowfast_r9000'" in err and "avslowfast_r50_4x16" in err


def test_presets_command_lists_every_paper_row(capsys):
    assert main(["presets", "--json"]) == 0
    names = json.loads(capsys.readouterr().out)
    for row in ["slowfast_r50_4x16", "avslowfast_r50_4x16", "avslowfast_r50_8x8", "avslowfast_r101_8x8",
                "avslowfast_r101_16x8_nl", "audio_only_r50", "slowfast_tiny", "avslowfast_tiny", "audio_only_tiny"]:
        assert row in names


def test_string_overrides_take_the_path_as_given_or_json_quoted():
    cfg = get_preset("avslowfast_tiny")
    assert cfg.with_overrides(["data.root=/data/k400 train"]).data.root == "/data/k400 train"
    assert cfg.with_overrides(['data.root="/data/a=b"']).data.root == "/data/a=b"


def test_train_cli_data_dir_reaches_the_config(tmp_path):
    import argparse

    from avsf._cli.train import add_arguments, build_config

    (tmp_path / "train.csv").write_text("a.mp4 0\n")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--preset", "slowfast_tiny", "--data", str(tmp_path), "--out", str(tmp_path / "run")])
    assert build_config(args).data.root == str(tmp_path.resolve())
