"""Hierarchical AVS: the margin contrastive loss by hand, pair filtering, the batch layout of
aligned and misaligned audio, and which stages are live."""

import dataclasses
import math

import pytest
import torch

from avsf.models import build_model, example_inputs
from avsf.models.avs import margin_contrastive_loss, pair_weights
from avsf.presets import get_preset


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_margin_loss_on_a_hand_computed_case():
    v = torch.tensor([[0.5, 0.0], [0.5, 0.0]])
    pos = torch.tensor([[0.5, 0.0], [0.0, 0.5]])
    neg = torch.tensor([[0.0, 0.5], [0.5, 0.0]])
    # pair 0: positive distance 0; negative at distance sqrt(0.5) < margin: (0.99 - sqrt(0.5))^2
    # pair 1: positive squared distance 0.25 + 0.25; negative identical to v: 0.99^2
    pair0 = 0.0 + (0.99 - math.sqrt(0.5)) ** 2
    pair1 = 0.5 + 0.99 ** 2
    loss = margin_contrastive_loss(visual=v, audio_pos=pos, audio_neg=neg, weight=torch.ones(2), margin=0.99)
    assert loss.item() == pytest.approx((pair0 + pair1) / 4, rel=1e-6)
    only0 = margin_contrastive_loss(visual=v, audio_pos=pos, audio_neg=neg, weight=torch.tensor([1.0, 0.0]),
                                    margin=0.99)
    assert only0.item() == pytest.approx(pair0 / 2, rel=1e-6)
    far = torch.tensor([[-0.5, 0.0], [-0.5, 0.0]])  # negatives beyond the margin cost nothing
    assert margin_contrastive_loss(visual=v, audio_pos=v, audio_neg=far, weight=torch.ones(2),
                                   margin=0.99).item() == 0.0


def test_pair_filter_drops_silent_and_duplicate_pairs():
    g = torch.Generator().manual_seed(0)
    audio = torch.randn(4, 1, 16, 8, generator=g)
    neg = torch.randn(4, 1, 16, 8, generator=g)
    audio[1] = 0.0  # silent positive
    neg[2] = 0.001 * torch.randn(1, 16, 8, generator=g)  # near-silent negative (variance 1e-6)
    neg[3] = audio[3]  # the negative duplicates the positive
    w = pair_weights(audio=audio, audio_neg=neg, silence_var=0.01)
    assert w.tolist() == [1.0, 0.0, 0.0, 0.0]


def _model(**changes):
    cfg = dataclasses.replace(get_preset("avslowfast_tiny").model, num_classes=4, dropout=0.0, **changes)
    torch.manual_seed(0)
    return cfg, build_model(cfg).train()


def _batch(cfg, n=4, seed=1):
    return example_inputs(cfg, crop=48, batch=n, with_negatives=True, generator=torch.Generator().manual_seed(seed))


def test_batch_layout_positives_first_then_negatives():
    cfg, model = _model()
    n = 4
    batch = _batch(cfg, n)
    seen = {}
    model.audio["stem"].register_forward_hook(lambda _m, i, _o: seen.__setitem__("stem_in", i[0].detach()))
    model.audio["res3"].register_forward_hook(lambda _m, _i, o: seen.__setitem__("res3_out", o.detach()))
    model.av["res3"].register_forward_hook(lambda _m, i, _o: seen.__setitem__("lateral_in", i[0].detach()))
    proj = model.avs["res3"]
    proj.register_forward_hook(lambda _m, _i, o: seen.__setitem__("proj", tuple(t.detach() for t in o)))
    out = model(batch, drop_audio=True)
    # the Audio pathway runs on [audio; audio_neg]: rows i < N aligned, rows N + i the negatives
    assert torch.equal(seen["stem_in"], torch.cat([batch["audio"], batch["audio_neg"]]))
    # only the aligned half reaches the visual pathways
    assert torch.equal(seen["lateral_in"], seen["res3_out"][:n])
    v, a = seen["proj"]
    assert v.shape[0] == n and a.shape[0] == 2 * n
    w = pair_weights(audio=batch["audio"], audio_neg=batch["audio_neg"], silence_var=cfg.avs_silence_var)
    ours = margin_contrastive_loss(visual=v, audio_pos=a[:n], audio_neg=a[n:], weight=w, margin=cfg.avs_margin)
    torch.testing.assert_close(out["avs_loss/res3"].detach(), ours)
    # the authors' code stacked pairs interleaved (pos0, neg0, pos1, ...) but split into halves
    interleaved = torch.stack([a[:n], a[n:]], dim=1).reshape(2 * n, -1)
    theirs = margin_contrastive_loss(visual=v, audio_pos=interleaved[:n], audio_neg=interleaved[n:], weight=w,
                                     margin=cfg.avs_margin)
    assert not torch.allclose(theirs, ours)


def test_avs_loss_follows_the_samples_not_their_positions():
    cfg, model = _model()
    batch = _batch(cfg, 4)
    perm = torch.tensor([2, 0, 3, 1])
    permuted = {k: v[perm] for k, v in batch.items()}
    base = model(batch, drop_audio=True)
    moved = model(permuted, drop_audio=True)
    torch.testing.assert_close(moved["avs_loss"], base["avs_loss"], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(moved["logits"], base["logits"][perm], rtol=1e-4, atol=1e-5)
    # re-pairing the negatives with other clips is a different loss
    shuffled = dict(batch, audio_neg=batch["audio_neg"][perm])
    assert not torch.allclose(model(shuffled, drop_audio=True)["avs_loss"], base["avs_loss"], rtol=1e-4)


def test_stages_after_a_live_audio_lateral_are_not_trained():
    cfg, model = _model()
    assert cfg.av_fusion_stages == ("res3", "res4") and cfg.avs_stages == ("res3", "res4", "res5")
    batch = _batch(cfg)
    kept = model(batch, drop_audio=False)
    # res4 and res5 visual features have already heard the clip's audio through res3's lateral
    assert kept["avs_loss/res3"] > 0 and kept["avs_loss/res4"] == 0 and kept["avs_loss/res5"] == 0
    dropped = model(batch, drop_audio=True)
    assert all(dropped[f"avs_loss/{s}"] > 0 for s in ("res3", "res4", "res5"))
    total = sum(dropped[f"avs_loss/{s}"] for s in ("res3", "res4", "res5"))
    torch.testing.assert_close(dropped["avs_loss"], cfg.avs_weight * total)


def test_all_pairs_filtered_gives_zero_loss_with_every_parameter_in_the_graph():
    cfg, model = _model()
    batch = _batch(cfg)
    batch["audio"] = torch.zeros_like(batch["audio"])  # silent clips take no part in AVS
    out = model(batch, drop_audio=True)
    assert out["avs_loss"].item() == 0.0
    (out["logits"].sum() + out["avs_loss"]).backward()
    assert all(p.grad is not None for p in model.avs.parameters())


def test_no_avs_loss_in_eval_or_without_negatives():
    cfg, model = _model()
    batch = _batch(cfg)
    assert "avs_loss" not in model.eval()(batch)
    model.train()
    plain = {k: v for k, v in batch.items() if k != "audio_neg"}
    out = model(plain, drop_audio=False)
    assert "avs_loss" not in out
    out["logits"].sum().backward()  # the unused projections still get a (zero) gradient: DDP-safe
    assert all(p.grad is not None and not p.grad.any() for p in model.avs.parameters())
