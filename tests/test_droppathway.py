"""DropPathway: off in eval, zeroes exactly the right contributions in each mode, keeps every
parameter in the graph."""

import dataclasses

import pytest
import torch

from avsf.models import build_model, example_inputs
from avsf.presets import get_preset


pytestmark = pytest.mark.usefixtures("one_torch_thread")



def _model(**changes):
    cfg = dataclasses.replace(get_preset("avslowfast_tiny").model, num_classes=6, dropout=0.0, **changes)
    torch.manual_seed(0)
    return cfg, build_model(cfg)


def _batch(cfg, seed=1, **kw):
    return example_inputs(cfg, crop=48, batch=3, generator=torch.Generator().manual_seed(seed), **kw)


def test_eval_output_is_independent_of_the_rate_the_mode_and_the_draw():
    cfg, a = _model(droppathway_rate=0.8, droppathway_mode="laterals")
    _, b = _model(droppathway_rate=0.0, droppathway_mode="pathway")
    b.load_state_dict(a.state_dict())
    a.eval(), b.eval()
    batch = _batch(cfg)
    reference = b(batch)["logits"]
    torch.testing.assert_close(a(batch)["logits"], reference, rtol=0, atol=0)
    torch.testing.assert_close(a(batch, drop_audio=True)["logits"], reference, rtol=0, atol=0)
    assert not a.draw_drop(None) and not a.draw_drop(True)


def _zero_laterals(model):
    return [m.register_forward_hook(lambda _m, _i, out: out * 0.0) for m in model.av.values()]


@pytest.mark.parametrize("lateral", ["a_fs", "a_f_s"])
def test_laterals_mode_zeroes_exactly_the_audio_laterals(lateral):
    cfg, model = _model(droppathway_mode="laterals", av_lateral=lateral)
    model.train()
    batch = _batch(cfg)
    dropped = model(batch, drop_audio=True)["logits"]
    kept = model(batch, drop_audio=False)["logits"]
    hooks = _zero_laterals(model)
    by_hand = model(batch, drop_audio=False)["logits"]
    for h in hooks:
        h.remove()
    torch.testing.assert_close(dropped, by_hand)
    assert not torch.allclose(dropped, kept, atol=1e-5)  # the laterals do matter when kept
    # the audio features still reach the head
    other = dict(batch, audio=_batch(cfg, seed=2)["audio"])
    assert not torch.allclose(model(other, drop_audio=True)["logits"], dropped, atol=1e-5)


def test_pathway_mode_removes_all_audio_from_the_output():
    cfg, model = _model(droppathway_mode="pathway")
    model.train()
    batch = _batch(cfg)
    other = dict(batch, audio=_batch(cfg, seed=2)["audio"])
    dropped = model(batch, drop_audio=True)["logits"]
    torch.testing.assert_close(model(other, drop_audio=True)["logits"], dropped, rtol=0, atol=0)
    assert not torch.allclose(model(other, drop_audio=False)["logits"], model(batch, drop_audio=False)["logits"],
                              atol=1e-5)


def test_slow_pathway_hears_the_audio_only_when_the_draw_keeps_it():
    cfg, model = _model()
    model.train()
    seen = []
    model.slow["res5"].register_forward_hook(lambda _m, inputs, _o: seen.append(inputs[0].detach()))
    batch = _batch(cfg)
    other = dict(batch, audio=_batch(cfg, seed=2)["audio"])
    for drop in (True, False):
        seen.clear()
        model(batch, drop_audio=drop), model(other, drop_audio=drop)
        assert torch.equal(seen[0], seen[1]) is drop


@pytest.mark.parametrize("mode, drop, negatives", [
    ("laterals", True, True), ("laterals", False, False), ("pathway", True, False), ("pathway", False, True)])
def test_every_parameter_gets_a_gradient_whether_or_not_the_draw_fires(mode, drop, negatives):
    cfg, model = _model(droppathway_mode=mode)
    model.train()
    out = model(_batch(cfg, with_negatives=negatives), drop_audio=drop)
    assert ("avs_loss" in out) is negatives
    (out["logits"].square().mean() + out.get("avs_loss", 0.0)).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing


def test_the_draw_fires_with_probability_p_and_only_in_training():
    _, model = _model(droppathway_rate=0.8)
    model.train()
    torch.manual_seed(0)
    draws = [model.draw_drop(None) for _ in range(4000)]
    assert sum(draws) / len(draws) == pytest.approx(0.8, abs=0.025)  # ~4 standard deviations
    assert model.draw_drop(False) is False and model.draw_drop(True) is True
    _, never = _model(droppathway_rate=0.0)
    assert not any(never.train().draw_drop(None) for _ in range(100))
    _, visual = _model(arch="slowfast")
    assert not visual.train().draw_drop(True)  # nothing to drop in a visual-only model
