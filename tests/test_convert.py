"""avsf convert: zoo checkpoints built by the zoos' own code (PySlowFast's 2020 snapshot,
pytorchvideo 0.1.5) with random weights, saved in their formats, converted, and run.

A converted SlowFast model loads strictly into ``build_model(preset)`` and gives the source
model's class probabilities on the same input to 1e-5 (the sources' BN statistics, affine
parameters and heads are randomised, and the scores are far from uniform, so a misplaced
tensor shows). Refusals: a file for another preset, a missing, an extra or a reshaped tensor,
non-local blocks of another normalisation, and pickles that would run code.
"""

from __future__ import annotations

import dataclasses
import json
import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import zoo_models

from avsf.cli import main
from avsf.engine.convert import (CONVERTED_KEY, caffe2_to_pyslowfast, convert, load_numpy_pickle, read_source,
                                 write_checkpoint)
from avsf.engine.transfer import load_backbone, load_init_checkpoint
from avsf.errors import UserError
from avsf.models.network import build_model
from avsf.presets import get_preset

NUM_CLASSES = 10
INSTALL = "pip install -e '.[test]' and pip install --no-deps slowfast==1.0 (`make install` does both)"


@pytest.fixture(autouse=True)
def zoo(monkeypatch):
    """The zoos' code importable (detectron2 stubbed where absent), on one thread."""
    zoo_models.stub_missing_modules(monkeypatch)
    for name in ("slowfast", "pytorchvideo"):
        try:
            __import__(name)
        except ImportError as e:  # a missing test extra fails, never skips: CI must not pass without it
            pytest.fail(f"{name} is not installed ({e}): {INSTALL}")


# --- the sources -------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Variant:
    preset: str
    depth: int
    slow_frames: int
    alpha: int
    fusion_kernel: int
    crop: int
    overrides: tuple[str, ...] = ()
    nonlocal_res4: tuple[int, ...] = ()
    # compare in float64: in float32 this deep non-local model's scores differ by ~5e-6 from
    # summation order alone (the two models run different conv kernels and layouts), in float64
    # by ~1e-14, so the tolerance measures the mapping, not the CPU
    float64: bool = False


R50_4X16 = Variant("slowfast_r50_4x16", 50, 4, 8, 5, 64)
R50_8X8 = Variant("slowfast_r50_8x8", 50, 8, 4, 7, 64)
# pytorchvideo's slowfast_16x8_r101_50_50: no non-local blocks, F->S kernel 5
R101_16X8 = Variant("slowfast_r101_16x8_nl", 101, 16, 4, 5, 32,
                    overrides=("model.nonlocal_res4=false", "model.fusion_kernel=5"))
# PySlowFast's SLOWFAST_NLN_16x8_R101_50_50 layout (non-local after res4 blocks 6, 13, 20)
R101_16X8_NL = Variant("slowfast_r101_16x8_nl", 101, 16, 4, 5, 32, overrides=("model.fusion_kernel=5",),
                       nonlocal_res4=(6, 13, 20), float64=True)


def inputs(v: Variant, *, seed: int = 0, dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    """[slow, fast], as both frameworks take them: Slow every alpha-th Fast frame."""
    g = torch.Generator().manual_seed(seed)
    fast = torch.randn(1, 3, v.slow_frames * v.alpha, v.crop, v.crop, generator=g).to(dtype)
    return [fast[:, :, ::v.alpha].contiguous(), fast]


def _dtype(v: Variant) -> torch.dtype:
    return torch.float64 if v.float64 else torch.float32


_CACHE: dict = {}


def pyslowfast_source(v: Variant, *, instantiation: str = "softmax") -> tuple[dict, str, torch.Tensor]:
    """(state dict, cfg YAML, eval probabilities on inputs(v)) of a randomised PySlowFast model."""
    key = ("pyslowfast", v, instantiation)
    if key not in _CACHE:
        torch.manual_seed(0)
        model, cfg = zoo_models.pyslowfast_model(depth=v.depth, slow_frames=v.slow_frames, alpha=v.alpha,
                                                 fusion_kernel=v.fusion_kernel, crop=v.crop, num_classes=NUM_CLASSES,
                                                 nonlocal_res4=v.nonlocal_res4, instantiation=instantiation)
        zoo_models.randomise(model, inputs(v), seed=1, head=model.head.projection, softmax_in_eval=True)
        state = {k: t.clone() for k, t in model.state_dict().items()}
        with torch.no_grad():
            probs = model.to(_dtype(v))(inputs(v, dtype=_dtype(v)))
        _CACHE[key] = (state, cfg, probs)
    return _CACHE[key]


def pytorchvideo_source(v: Variant, *, temporal_blocks_res4: int | None = None) -> tuple[dict, torch.Tensor]:
    """(state dict, eval logits on inputs(v)) of a randomised pytorchvideo create_slowfast."""
    key = ("pytorchvideo", v, temporal_blocks_res4)
    if key not in _CACHE:
        torch.manual_seed(0)
        model = zoo_models.pytorchvideo_model(depth=v.depth, slow_frames=v.slow_frames, alpha=v.alpha,
                                              fusion_kernel=v.fusion_kernel, crop=v.crop, num_classes=NUM_CLASSES,
                                              temporal_blocks_res4=temporal_blocks_res4)
        zoo_models.randomise(model, inputs(v), seed=1, head=model.blocks[6].proj, softmax_in_eval=False)
        with torch.no_grad():
            logits = model(inputs(v))
        _CACHE[key] = ({k: t.clone() for k, t in model.state_dict().items()}, logits)
    return _CACHE[key]


def save_pyth(path: Path, state: dict, *, cfg: str | None = None) -> Path:
    """A PySlowFast / pytorchvideo checkpoint file (epoch, model_state, optimizer_state, cfg)."""
    torch.save({"epoch": 196, "model_state": state, "optimizer_state": {}, **({"cfg": cfg} if cfg else {})}, path)
    return path


def save_caffe2(path: Path, state: dict) -> Path:
    """A Caffe2 zoo pickle: {"blobs": numpy arrays}, plus the solver blobs the zoo files carry."""
    blobs = zoo_models.to_caffe2_blobs(state)
    blobs.update({"conv1_w_momentum": np.zeros(1, np.float32), "lr": np.array([0.1], np.float32),
                  "model_iter": np.array([1000], np.int64)})
    with path.open("wb") as f:
        pickle.dump({"blobs": blobs}, f, protocol=2)  # the protocol Caffe2's Python 2 wrote
    return path


def avsf_probs(path: Path, v: Variant) -> tuple[torch.Tensor, dict]:
    """Eval probabilities of the converted checkpoint, loaded strictly into build_model(preset)."""
    state = torch.load(path, weights_only=True, map_location="cpu")
    cfg = get_preset(v.preset).with_overrides(list(v.overrides) + [f"model.num_classes={NUM_CLASSES}"])
    model = build_model(cfg.model)
    model.load_state_dict(state["model"], strict=True)
    slow, fast = inputs(v, dtype=_dtype(v))
    with torch.no_grad():
        logits = model.to(_dtype(v)).eval()({"slow": slow, "fast": fast})["logits"]
    return torch.softmax(logits, dim=1), state


def assert_same_scores(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    # neither uniform nor one-hot, or the comparison would prove little
    assert 0.2 < theirs.max() < 0.999, f"the source's top probability is {float(theirs.max()):.4f}"
    diff = float((ours - theirs).abs().max())
    assert diff <= 1e-5, f"max |softmax difference| {diff:.3g}"


# --- exact conversions ---------------------------------------------------------------------------
@pytest.mark.parametrize("variant", [R50_4X16, R50_8X8], ids=["4x16", "8x8"])
@pytest.mark.parametrize("fmt", ["pyslowfast", "caffe2"])
def test_pyslowfast_and_caffe2_checkpoints_convert_to_the_same_model(tmp_path, variant, fmt):
    state, cfg, probs = pyslowfast_source(variant)
    src = (save_pyth(tmp_path / "zoo.pyth", state, cfg=cfg) if fmt == "pyslowfast"
           else save_caffe2(tmp_path / "zoo.pkl", state))
    conversion = convert(src, fmt=fmt, preset=variant.preset, overrides=list(variant.overrides))
    out = write_checkpoint(conversion, tmp_path / "converted.pt")
    ours, saved = avsf_probs(out, variant)
    assert_same_scores(ours, probs)
    record = saved[CONVERTED_KEY]
    assert record["format"] == fmt and record["num_classes"] == NUM_CLASSES and record["file"] == src.name
    assert len(record["sha256"]) == 64
    # every tensor from the file, but the BN step counters a Caffe2 pickle does not keep
    unset = [k for k, n in record["keys"].items() if n is None]
    if fmt == "pyslowfast":
        assert unset == [] and record["from_source"] == len(state) == 662
        assert record["keys"]["fs.res2.conv.weight"] == "s2_fuse.conv_f2s.weight"
    else:
        assert unset and all(k.endswith("num_batches_tracked") for k in unset)
        assert record["keys"]["fs.res2.conv.weight"] == "t_res2_2_branch2c_bn_subsample_w"
        assert sorted(record["ignored_in_file"]) == ["conv1_w_momentum", "lr", "model_iter"]


def test_caffe2_names_are_pyslowfasts():
    # our reading of the Caffe2 names against PySlowFast's own loader map, blob for blob
    # (non-local blocks included), and the test's Caffe2 writer against it too
    from slowfast.utils.c2_model_loading import get_name_convert_func

    theirs = get_name_convert_func()
    state, _, _ = pyslowfast_source(R101_16X8_NL)
    blobs = zoo_models.to_caffe2_blobs(state)
    assert len(blobs) == len([k for k in state if not k.endswith("num_batches_tracked")])
    assert any(b.startswith("nonlocal_conv4_13_") for b in blobs)
    for blob in blobs:
        assert caffe2_to_pyslowfast(blob) == theirs(blob), blob
        assert theirs(blob) in state, blob


@pytest.mark.parametrize("variant,blocks", [(R50_4X16, None), (R50_8X8, None), (R101_16X8, 6)],
                         ids=["4x16", "8x8", "r101_16x8_50_50"])
def test_pytorchvideo_checkpoints_convert_exactly(tmp_path, variant, blocks):
    state, logits = pytorchvideo_source(variant, temporal_blocks_res4=blocks)
    src = save_pyth(tmp_path / "hub.pyth", state)
    out = write_checkpoint(convert(src, fmt="pytorchvideo", preset=variant.preset, overrides=list(variant.overrides)),
                           tmp_path / "converted.pt")
    ours, saved = avsf_probs(out, variant)
    assert_same_scores(ours, torch.softmax(logits, dim=1))
    assert saved[CONVERTED_KEY]["initialised"] == 0
    assert saved[CONVERTED_KEY]["keys"]["head.fc.weight"] == "blocks.6.proj.weight"


def test_pyslowfast_non_local_blocks_convert_exactly(tmp_path):
    state, cfg, probs = pyslowfast_source(R101_16X8_NL)
    src = save_pyth(tmp_path / "nln.pyth", state, cfg=cfg)
    out = write_checkpoint(convert(src, fmt="pyslowfast", preset=R101_16X8_NL.preset,
                                   overrides=list(R101_16X8_NL.overrides)), tmp_path / "converted.pt")
    ours, saved = avsf_probs(out, R101_16X8_NL)
    assert_same_scores(ours, probs)
    assert saved[CONVERTED_KEY]["keys"]["slow.res4.blocks.7.theta.weight"] == "s4.pathway0_nonlocal6.conv_theta.weight"


def test_a_misplaced_tensor_shows_in_the_scores(tmp_path):
    # the negative control of the comparisons above: one BN's running statistics swapped for
    # another's of the same width changes the probabilities by far more than the tolerance
    state, cfg, probs = pyslowfast_source(R50_4X16)
    out = write_checkpoint(convert(save_pyth(tmp_path / "zoo.pyth", state, cfg=cfg), fmt="pyslowfast",
                                   preset=R50_4X16.preset), tmp_path / "converted.pt")
    saved = torch.load(out, weights_only=True)
    a, b = "slow.res3.blocks.1.bn_a.running_var", "slow.res3.blocks.2.bn_a.running_var"
    saved["model"][a], saved["model"][b] = saved["model"][b], saved["model"][a]
    torch.save(saved, out)
    ours, _ = avsf_probs(out, R50_4X16)
    assert float((ours - probs).abs().max()) > 1e-3


def test_an_avslowfast_preset_takes_the_visual_side_and_initialises_the_audio_side(tmp_path):
    state, cfg, _ = pyslowfast_source(R50_4X16)
    src = save_pyth(tmp_path / "zoo.pyth", state, cfg=cfg)
    sf = convert(src, fmt="pyslowfast", preset="slowfast_r50_4x16").state["model"]
    conversion = convert(src, fmt="pyslowfast", preset="avslowfast_r50_4x16", seed=3)
    av, keys = conversion.state["model"], conversion.record["keys"]
    visual = [k for k in av if k.startswith(("slow.", "fast.", "fs."))]
    assert len(visual) == 660 and all(keys[k] is not None and torch.equal(av[k], sf[k]) for k in visual)
    rest = [k for k in av if k not in visual]
    assert {k.split(".")[0] for k in rest} == {"audio", "av", "avs", "head"} and all(keys[k] is None for k in rest)
    # initialised as in training: what build_model gives under the same seed
    torch.manual_seed(3)
    fresh = build_model(dataclasses.replace(get_preset("avslowfast_r50_4x16").model, num_classes=NUM_CLASSES))
    assert all(torch.equal(av[k], fresh.state_dict()[k]) for k in rest)
    # and it is a model.init_from checkpoint: the backbone loads into a fresh AVSlowFast run's model
    out = write_checkpoint(conversion, tmp_path / "runs" / "avsf_from_sf.pt")
    loaded, source = load_init_checkpoint(str(out), tmp_path / "runs" / "some_run")
    assert source["step"] == 0 and source["path"] == str(out)
    target = build_model(get_preset("avslowfast_r50_4x16").model)  # the training run's 400 classes
    keys_loaded = load_backbone(target, loaded["model"], source=str(out))
    assert len(keys_loaded) == len([k for k in av if not k.startswith(("head.", "avs."))])
    assert torch.equal(target.state_dict()["fast.res5.blocks.2.conv_c.weight"], state["s5.pathway1_res2.branch2.c.weight"])


# --- refusals ------------------------------------------------------------------------------------
def test_a_file_for_another_preset_is_refused_naming_the_keys_and_the_presets_it_fits(tmp_path):
    state, cfg, _ = pyslowfast_source(R50_8X8)
    src = save_pyth(tmp_path / "zoo.pyth", state, cfg=cfg)
    with pytest.raises(UserError) as e:
        convert(src, fmt="pyslowfast", preset="slowfast_r50_4x16")
    msg = str(e.value)
    assert "shape differences at fs.pool1.conv.weight <- s1_fuse.conv_f2s.weight [16, 8, 7, 1, 1] vs [16, 8, 5, 1, 1]" in msg
    assert "(4)" in msg  # the four laterals, counted
    assert "presets this file fits: avslowfast_r50_8x8, slowfast_r50_8x8" in msg
    # the authors' AVSlowFast has no F->S after pool1 and res2: other input widths, two laterals too many
    with pytest.raises(UserError, match=r"slow\.res2\.blocks\.0\.conv_a\.weight <- s2\.pathway0_res0\.branch2\.a\.weight "
                                        r"\[64, 80, 1, 1, 1\] vs \[64, 64, 1, 1, 1\].*in the file but not in the "
                                        r"preset: s1_fuse\.bn\.bias"):
        convert(src, fmt="pyslowfast", preset="avslowfast_r50_8x8_authors")


def test_missing_extra_and_reshaped_tensors_are_refused(tmp_path):
    state, cfg, _ = pyslowfast_source(R50_4X16)
    missing = {k: v for k, v in state.items() if not k.startswith("s3.pathway1_res1.branch2.b_bn.")}
    with pytest.raises(UserError, match=r"missing from the file: fast\.res3\.blocks\.1\.bn_b\.weight <- "
                                        r"s3\.pathway1_res1\.branch2\.b_bn\.weight.*\(5\)"):
        convert(save_pyth(tmp_path / "a.pyth", missing, cfg=cfg), fmt="pyslowfast", preset="slowfast_r50_4x16")
    extra = dict(state, **{"s6.pathway0_res0.branch1.weight": torch.zeros(1)})
    with pytest.raises(UserError, match=r"in the file but not in the preset: s6\.pathway0_res0\.branch1\.weight \(1\)"):
        convert(save_pyth(tmp_path / "b.pyth", extra, cfg=cfg), fmt="pyslowfast", preset="slowfast_r50_4x16")
    reshaped = dict(state, **{"s4.pathway0_res2.branch2.b.weight": torch.zeros(256, 256, 3, 3, 3)})
    with pytest.raises(UserError, match=r"shape differences at slow\.res4\.blocks\.2\.conv_b\.weight <- "
                                        r"s4\.pathway0_res2\.branch2\.b\.weight \[256, 256, 3, 3, 3\] vs "
                                        r"\[256, 256, 1, 3, 3\]"):
        convert(save_pyth(tmp_path / "c.pyth", reshaped, cfg=cfg), fmt="pyslowfast", preset="slowfast_r50_4x16")
    blobs = zoo_models.to_caffe2_blobs(state)
    del blobs["t_res4_5_branch2c_bn_subsample_w"]
    with (tmp_path / "d.pkl").open("wb") as f:
        pickle.dump({"blobs": blobs}, f, protocol=2)
    with pytest.raises(UserError, match=r"missing from the file: fs\.res4\.conv\.weight <- s4_fuse\.conv_f2s\.weight"):
        convert(tmp_path / "d.pkl", fmt="caffe2", preset="slowfast_r50_4x16")


def test_pytorchvideos_slowfast_r101_is_not_avsfs_r101(tmp_path):
    # pytorchvideo's slowfast_r101 (8x8) keeps temporal kernels in all 23 res4 blocks and an F->S
    # kernel of 5; avsf's slowfast_r101_8x8 has them in 6 blocks (R101_50_50) and kernel 7
    with torch.device("meta"):  # shapes are all a refusal needs: no 62 M random numbers
        model = zoo_models.pytorchvideo_model(depth=101, slow_frames=8, alpha=4, fusion_kernel=5, crop=32,
                                              num_classes=NUM_CLASSES)
    state = {k: torch.zeros((), dtype=v.dtype).expand(v.shape) for k, v in model.state_dict().items()}
    src = save_pyth(tmp_path / "r101.pyth", state)
    with pytest.raises(UserError) as e:
        convert(src, fmt="pytorchvideo", preset="slowfast_r101_8x8")
    msg = str(e.value)
    assert ("shape differences at slow.res4.blocks.6.conv_a.weight <- "
            "blocks.3.multipathway_blocks.0.res_blocks.6.branch2.conv_a.weight [256, 1024, 3, 1, 1] vs "
            "[256, 1024, 1, 1, 1]") in msg
    assert "(38 in all)" in msg  # 4 laterals + 17 res4 blocks x 2 pathways
    assert "no preset fits it" in msg


def test_non_local_blocks_of_another_normalisation_are_refused(tmp_path):
    state, cfg, _ = pyslowfast_source(R101_16X8_NL)
    dot = cfg.replace("INSTANTIATION: softmax", "INSTANTIATION: dot_product")
    assert dot != cfg
    with pytest.raises(UserError, match=r"NONLOCAL\.INSTANTIATION='dot_product'"):
        convert(save_pyth(tmp_path / "dot.pyth", state, cfg=dot), fmt="pyslowfast", preset=R101_16X8_NL.preset,
                overrides=list(R101_16X8_NL.overrides))
    with pytest.raises(UserError, match=r"does not record NONLOCAL\.INSTANTIATION"):
        convert(save_caffe2(tmp_path / "nln.pkl", state), fmt="caffe2", preset=R101_16X8_NL.preset,
                overrides=list(R101_16X8_NL.overrides))


class _RunsACommand:
    """Pickles as a call of os.system: what a malicious .pkl would do on plain pickle.load."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_would_run_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    payload = pickle.dumps({"blobs": {"conv1_w": _RunsACommand(marker)}}, protocol=2)
    (tmp_path / "evil.pkl").write_bytes(payload)
    with pytest.raises(UserError, match=r"refusing to unpickle (posix|os)\.system"):
        convert(tmp_path / "evil.pkl", fmt="caffe2", preset="slowfast_r50_4x16")
    assert not marker.exists()
    with pytest.raises(UserError, match=r"refusing to unpickle builtins\.eval"):
        load_numpy_pickle(io.BytesIO(b"cbuiltins\neval\n(S'1+1'\ntR."))
    # the same object in a torch file: torch.load(weights_only=True) refuses it too
    torch.save({"model_state": {"x": _RunsACommand(marker)}}, tmp_path / "evil.pyth")
    with pytest.raises(UserError, match=r"refused to load .*weights_only=True"):
        convert(tmp_path / "evil.pyth", fmt="pyslowfast", preset="slowfast_r50_4x16")
    assert not marker.exists()


def test_files_of_another_format_say_which_flag_to_use(tmp_path):
    torch.save({"model_state": {}}, tmp_path / "torch.pkl")
    with pytest.raises(UserError, match=r"torch \(zip\) file, not a Caffe2 pickle.*--from pyslowfast"):
        read_source(tmp_path / "torch.pkl", fmt="caffe2")
    with (tmp_path / "c2.pkl").open("wb") as f:
        pickle.dump({"blobs": {"pred_w": np.zeros((2, 3), np.float32)}}, f, protocol=2)
    with pytest.raises(UserError, match=r"not a torch file for --from pyslowfast; a Caffe2 pickle \(a 'blobs' dict\): "
                                        r"use --from caffe2"):
        read_source(tmp_path / "c2.pkl", fmt="pyslowfast")
    with pytest.raises(UserError, match=r"no such file"):
        read_source(tmp_path / "absent.pyth", fmt="pyslowfast")


def test_the_command_prints_where_each_group_came_from(tmp_path, capsys):
    state, cfg, _ = pyslowfast_source(R50_4X16)
    src = save_pyth(tmp_path / "SLOWFAST_4x16_R50.pyth", state, cfg=cfg)
    out = tmp_path / "converted.pt"
    assert main(["convert", str(src), "--from", "pyslowfast", "--preset", "avslowfast_r50_4x16", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("SLOWFAST_4x16_R50.pyth (pyslowfast, sha256 ")
    assert lines[0].endswith("660 tensors from the file, 357 initialised; the file's head (head.projection.weight, "
                             "head.projection.bias) not taken: this preset's is wider")
    rows = {line.split()[0]: line for line in lines[1:-1]}
    assert rows["slow.res3"].split(None, 1)[1] == "78 from s3.pathway0_res*"  # 4 blocks x 18 + the shortcut's 6
    assert rows["fs.pool1"].split(None, 1)[1] == "6 from s1_fuse.*"
    assert rows["audio.res2"].split(None, 1)[1].startswith("initialised") is False
    assert rows["audio.res2"].endswith("initialised (seed 0)") and rows["head"].endswith("initialised (seed 0)")
    assert lines[-1] == f"use it with: --set model.init_from={out.resolve()}"
    assert main(["convert", str(src), "--from", "pyslowfast", "--preset", "slowfast_r50_8x8", "--out",
                 str(tmp_path / "no.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("avsf convert: error: SLOWFAST_4x16_R50.pyth (pyslowfast) does not match preset "
                          "'slowfast_r50_8x8'")
    assert not (tmp_path / "no.pt").exists()


# --- avsf test of a converted file ---------------------------------------------------------------
def test_avsf_test_scores_a_converted_file_with_a_presets_data(tmp_path, smoke_root, capsys):
    """`avsf test --checkpoint FILE --preset NAME --out DIR`: a converted PySlowFast R50 4x16 with
    the built-in data's 20 classes is tested on that data (R50 at 64 pixels, 10 videos); a file
    whose head has another class count, or weights of another preset, is refused."""
    torch.manual_seed(0)
    model, cfg = zoo_models.pyslowfast_model(depth=50, slow_frames=4, alpha=8, fusion_kernel=5, crop=64,
                                             num_classes=20, nonlocal_res4=(), instantiation="softmax")
    src = save_pyth(tmp_path / "zoo20.pyth", model.state_dict(), cfg=cfg)
    out = write_checkpoint(convert(src, fmt="pyslowfast", preset="slowfast_r50_4x16"), tmp_path / "zoo20.pt")
    data = [f"data.synthetic_root={smoke_root.parent}", "data.limit_videos=10", "data.test_short_side=64",
            "data.test_crop=64", "data.num_temporal_views=1", "data.num_spatial_views=1", "data.num_workers=0",
            "device=cpu"]
    args = ["test", "--checkpoint", str(out), "--preset", "slowfast_r50_4x16", "--json"]
    for o in data:
        args += ["--set", o]
    assert main(args + ["--out", str(tmp_path / "tested")]) == 0
    final = json.loads(capsys.readouterr().out)
    assert final["split"] == "test" and 0 <= final["top1"] <= 100 and final["checkpoint"] == "ckpt-000000000.pt"
    saved = json.loads((tmp_path / "tested" / "config.json").read_text())
    assert saved["model"]["num_classes"] == 20 and saved["name"] == "slowfast_r50_4x16"
    # the 10-class zoo file of the other tests: its head does not fit the data's 20 classes
    state, cfg10, _ = pyslowfast_source(R50_4X16)
    ten = write_checkpoint(convert(save_pyth(tmp_path / "zoo10.pyth", state, cfg=cfg10), fmt="pyslowfast",
                                   preset="slowfast_r50_4x16"), tmp_path / "zoo10.pt")
    assert main(["test", "--checkpoint", str(ten), "--preset", "slowfast_r50_4x16", "--out", str(tmp_path / "t10"),
                 *sum((["--set", o] for o in data), [])]) == 2
    assert "10 classes and the test data 20" in capsys.readouterr().err
    assert main(["test", "--checkpoint", str(out), "--preset", "slowfast_r50_8x8", "--out", str(tmp_path / "t8"),
                 *sum((["--set", o] for o in data), [])]) == 2
    assert "do not fit preset slowfast_r50_8x8" in capsys.readouterr().err
    assert main(["test", "--checkpoint", str(out), "--out", str(tmp_path / "t")]) == 2
    assert "needs --preset NAME and --out DIR" in capsys.readouterr().err
