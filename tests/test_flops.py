"""Parameter and FLOP counts against the references (REFERENCE.md, fvcore convention)."""

import dataclasses
import json

import pytest
import torch

from avsf.cli import main
from avsf.flops import FlopCounter, count_model, count_params
from avsf.models import build_model, example_inputs
from avsf.presets import get_preset


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# REFERENCE.md's compute table: preset -> (M params, GFLOPs at 224, GFLOPs at 256); None = not given
REFERENCE = {
    "slowfast_r50_4x16": (34.48, 27.82, 36.34),
    "slowfast_r50_8x8": (34.57, 50.58, 66.07),
    "avslowfast_r50_4x16": (41.88, 31.89, 40.41),
    "avslowfast_r50_4x16_authors": (41.82, 31.48, 39.88),
    "avslowfast_r50_8x8_authors": (41.90, 53.73, 68.93),
}


@pytest.mark.parametrize("preset", sorted(REFERENCE))
def test_counts_match_the_reference_within_one_percent(preset):
    params_m, g224, g256 = REFERENCE[preset]
    cfg = get_preset(preset).model
    at256, at224 = count_model(cfg, 256), count_model(cfg, 224)
    assert isinstance(at256["params"], int)
    assert at256["params"] / 1e6 == pytest.approx(params_m, rel=0.01)
    assert at256["gflops"] == pytest.approx(g256, rel=0.01)
    assert at224["gflops"] == pytest.approx(g224, rel=0.01)


def test_audio_overhead_is_about_eleven_percent_and_independent_of_crop():
    visual = count_model(get_preset("slowfast_r50_4x16").model, 256)
    av256 = count_model(get_preset("avslowfast_r50_4x16").model, 256)
    av224 = count_model(get_preset("avslowfast_r50_4x16").model, 224)
    overhead = av256["gflops"] / visual["gflops"] - 1
    assert 0.10 <= overhead <= 0.12  # the paper: +11 %
    assert av256["gflops_audio"] == pytest.approx(av224["gflops_audio"], rel=1e-9)
    # the audio share is the difference to the visual-only model, up to the head's wider FC
    assert av256["gflops"] - visual["gflops"] == pytest.approx(av256["gflops_audio"], abs=0.002)
    assert visual["gflops_audio"] == 0


def test_avs_projections_are_not_counted():
    cfg = get_preset("avslowfast_r50_4x16").model
    with_avs = count_model(cfg, 224)
    without = count_model(dataclasses.replace(cfg, avs_stages=()), 224)
    assert with_avs["params"] == without["params"] and with_avs["gflops"] == without["gflops"]


@pytest.mark.filterwarnings("ignore::FutureWarning")  # fvcore calls the deprecated torch.jit.script
def test_counter_agrees_with_fvcore_on_a_small_model():
    import fvcore.nn as fvcore_nn  # pinned in pyproject: a cross-check, not the implementation
    cfg = dataclasses.replace(get_preset("avslowfast_tiny").model, num_classes=7, nonlocal_res4=True,
                              av_lateral="av_nonlocal", av_fusion_stages=("res3",),
                              stage_depths=(1, 1, 2, 1))
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    batch = example_inputs(cfg, crop=64, batch=1)
    keys = list(batch)

    class Positional(torch.nn.Module):  # fvcore traces positional tensors, not a dict
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *xs):
            return self.model(dict(zip(keys, xs)))["logits"]

    analysis = fvcore_nn.FlopCountAnalysis(Positional(), tuple(batch.values()))
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    counter = FlopCounter(model)
    with torch.no_grad():
        model(batch)
    counter.remove()
    ours = counter.total(exclude=("avs.",))
    assert counter.by_kind()["matmul"] > 0  # the non-local products are in the count
    assert ours == pytest.approx(analysis.total(), rel=1e-6)
    assert count_params(model) == fvcore_nn.parameter_count(model)[""] - sum(
        p.numel() for p in model.avs.parameters())


def test_flops_cli_prints_the_json_contract(capsys):
    assert main(["flops", "--preset", "slowfast_r50_4x16", "--crop", "224", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert isinstance(out["params"], int) and isinstance(out["gflops"], float)
    assert out["gflops"] == pytest.approx(27.82, rel=0.01) and out["gflops_audio"] == 0


def test_flops_cli_takes_overrides(capsys):
    assert main(["flops", "--preset", "avslowfast_r50_4x16", "--json", "--set", "model.audio_beta=0.25"]) == 0
    narrow = json.loads(capsys.readouterr().out)
    assert main(["flops", "--preset", "avslowfast_r50_4x16", "--json"]) == 0
    default = json.loads(capsys.readouterr().out)
    assert narrow["gflops_audio"] < default["gflops_audio"] / 3  # channels halved: ~4x fewer audio flops


def test_flops_cli_rejects_bad_overrides(capsys):
    assert main(["flops", "--preset", "avslowfast_r50_4x16", "--set", "model.av_lateral=sideways"]) == 2
    assert "choose one of a_fs, a_f_s, av_nonlocal" in capsys.readouterr().err
