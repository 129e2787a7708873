"""OGM-GE and Gradient-Blending (``model.balance``, avsf.engine.balance): OGM-GE's coefficient
(Eq. 10) on hand-made scores, the unimodal scores read from the fused head, the gradients
changed where the paper says and nowhere else; G-Blend's weights from given train and held-out
losses, its blended loss and where its gradients go; runs of both that log their per-modality
values and resume bit-exactly. Two ranks against one process: tests/test_engine_ddp_avs.py."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil

import pytest
import torch

from avsf.config import ConfigError
from avsf.engine.balance import OGMGE, encoder_kernels, gblend_weights, modality_of, ogm_coefficients
from avsf.presets import get_preset


def test_the_leading_modality_is_damped_by_one_minus_tanh_of_alpha_times_its_lead():
    k = ogm_coefficients(30.0, 10.0, alpha=0.1)  # visual three times as confident
    assert k["ratio_visual"] == pytest.approx(3.0)
    assert k["visual"] == pytest.approx(1 - math.tanh(0.3)) and k["audio"] == 1.0
    k = ogm_coefficients(10.0, 40.0, alpha=0.8)  # audio leads 4:1
    assert k["audio"] == pytest.approx(1 - math.tanh(3.2)) and k["visual"] == 1.0
    assert 0 < k["audio"] < 0.01  # a large lead nearly stops the leader
    assert ogm_coefficients(5.0, 5.0, alpha=0.5) == {"visual": 1.0, "audio": 1.0, "ratio_visual": 1.0}


def test_encoder_groups_are_the_pathways_not_the_fusion():
    assert modality_of("slow.res3.blocks.0.conv_a.weight") == "visual"
    assert modality_of("module.fast.stem.conv.weight") == "visual"
    assert modality_of("fs.res2.conv.weight") == "visual"
    assert modality_of("audio.res4.1.conv_b.weight") == "audio"
    assert modality_of("av.res3.conv.weight") is None and modality_of("head.fc.weight") is None
    assert modality_of("avs.res5.visual.weight") is None


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model(**changes):
    from avsf.models import build_model

    changes = {"num_classes": 5, "balance": "ogm_ge", "dropout": 0.0, "avs_stages": (), **changes}
    cfg = dataclasses.replace(get_preset("avslowfast_tiny").model, **changes)
    torch.manual_seed(0)
    return cfg, build_model(cfg)


def _batch(cfg, n: int = 4) -> dict[str, torch.Tensor]:
    from avsf.models import example_inputs

    g = torch.Generator().manual_seed(1)
    batch = example_inputs(cfg, crop=48, batch=n, generator=g)
    batch["label"] = torch.randint(0, 5, (n,), generator=g)
    return batch


def test_the_two_unimodal_scores_add_up_to_the_fused_logits():
    cfg, model = _model()
    batch = _batch(cfg)
    model.train()
    out = model(batch, drop_audio=False)
    assert torch.allclose(out["ogm_logits/visual"] + out["ogm_logits/audio"], out["logits"].float(), atol=1e-5)
    assert not out["ogm_logits/visual"].requires_grad  # read, never backpropagated
    model.eval()
    assert "ogm_logits/visual" not in model(batch)  # training only


def test_ogm_ge_scales_the_leader_adds_noise_of_the_gradients_spread_and_leaves_the_rest(monkeypatch):
    from avsf.engine import balance
    from avsf.engine.losses import task_loss

    cfg, model = _model()
    batch = _batch(cfg)
    model.train()
    out = model(batch, drop_audio=False)
    task_loss(out, batch, head="softmax").backward()
    before = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    ogm = OGMGE(cfg, model, seed=0)
    # make the visual branch lead 3:1, whatever the untrained model scores
    monkeypatch.setattr(balance, "ogm_coefficients",
                        lambda v, a, alpha: {"visual": 0.25, "audio": 1.0, "ratio_visual": 3.0})
    ogm.add(out, batch["label"])
    logs = ogm.apply(epoch=0, step=7, clips=4)
    assert logs["ogm_coeff_visual"] == 0.25 and logs["ogm_coeff_audio"] == 1.0
    kernels = {id(p): m for m, ps in encoder_kernels(model).items() for p in ps}
    g = torch.Generator().manual_seed(balance._derive(0, 7))
    seen = {"visual": 0, "audio": 0}
    for name, p in model.named_parameters():  # named_parameters: the order apply() draws in, visual first
        if id(p) in kernels and kernels[id(p)] == "visual":
            std = float(before[name].std()) + 1e-8
            expected = before[name] * 0.25 + torch.randn(p.shape, generator=g) * std
            assert torch.equal(p.grad, expected), name
            seen["visual"] += 1
    for name, p in model.named_parameters():
        if id(p) in kernels and kernels[id(p)] == "audio":
            std = float(before[name].std()) + 1e-8
            assert torch.equal(p.grad, before[name] + torch.randn(p.shape, generator=g) * std), name
            seen["audio"] += 1
        elif id(p) not in kernels and name in before:  # BN, biases, fusion, the head: untouched
            assert torch.equal(p.grad, before[name]), name
    assert seen["visual"] > 10 and seen["audio"] > 5
    # outside [ogm_start_epoch, ogm_end_epoch] nothing changes
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    ogm.add(out, batch["label"])
    assert ogm.apply(epoch=cfg.ogm_end_epoch + 1, step=8, clips=4)["ogm_coeff_visual"] == 1.0
    assert all(torch.equal(p.grad, grads[n]) for n, p in model.named_parameters() if p.grad is not None)


def test_the_real_coefficient_comes_from_the_batch_scores():
    cfg, model = _model()
    batch = _batch(cfg)
    model.train()
    out = model(batch, drop_audio=False)
    labels = batch["label"].view(-1, 1)
    s_v = float(out["ogm_logits/visual"].softmax(1).gather(1, labels).sum())
    s_a = float(out["ogm_logits/audio"].softmax(1).gather(1, labels).sum())
    ogm = OGMGE(cfg, model, seed=0)
    ogm.add(out, batch["label"])
    logs = ogm.apply(epoch=0, step=0, clips=4)  # no gradients yet: only the logs
    assert logs["ogm_ratio_visual"] == pytest.approx(s_v / s_a)
    expected = ogm_coefficients(s_v, s_a, alpha=cfg.ogm_alpha)
    assert (logs["ogm_coeff_visual"], logs["ogm_coeff_audio"]) == pytest.approx((expected["visual"], expected["audio"]))


def test_config_says_what_ogm_ge_needs_and_keeps_old_run_names():
    base = get_preset("avslowfast_tiny")
    assert base.model.balance == "droppathway"
    # the new fields at their defaults leave the hash (and every published run name) as it was
    assert base.config_hash() == base.with_overrides({"model.balance": "droppathway", "model.ogm_alpha": 0.1}).config_hash()
    assert base.config_hash() != base.with_overrides({"model.balance": "ogm_ge"}).config_hash()
    with pytest.raises(ConfigError, match="droppathway_rate=0 too"):
        base.with_overrides({"model.balance": "none"})
    base.with_overrides({"model.balance": "none", "model.droppathway_rate": 0})
    with pytest.raises(ConfigError, match="needs model.arch=avslowfast"):
        get_preset("slowfast_tiny").with_overrides({"model.balance": "ogm_ge"})
    with pytest.raises(ConfigError, match="choose one of"):
        base.with_overrides({"model.balance": "gradnorm"})


BALANCED = {"ogm_ge": {"model.balance": "ogm_ge", "model.ogm_alpha": 0.8},
            "gblend": {"model.balance": "gblend", "model.gblend_weights": "[0.3, 0.1, 0.6]"}}


def _train_cfg(smoke_root, method):
    return get_preset("avslowfast_tiny").with_overrides(
        {"data.synthetic_root": str(smoke_root.parent), "data.limit_videos": 32, "data.num_workers": 0,
         "solver.epochs": 2, "solver.batch_size": 8, "solver.warmup_epochs": 0, "eval_every": 2,
         "checkpoint_every": 2, "keep_checkpoints": 10, "tensorboard": False, "data.num_temporal_views": 1,
         **BALANCED[method]})


@pytest.mark.parametrize("method", list(BALANCED))
def test_a_balanced_run_logs_each_modality_and_resumes_bit_exactly(tmp_path, smoke_root, caplog, method):
    import logging

    from avsf.engine.checkpoint import list_checkpoints
    from avsf.engine.train import TIMING_FIELDS, train

    cfg = _train_cfg(smoke_root, method)
    whole = tmp_path / "whole"
    train(cfg, whole)
    lines = [json.loads(x) for x in (whole / "metrics.jsonl").read_text().splitlines()]
    epochs = [x for x in lines if x.get("kind") == "epoch"]
    assert len(epochs) == 2
    if method == "ogm_ge":
        assert all(0 < x["train_ogm_coeff_visual"] <= 1 and 0 < x["train_ogm_coeff_audio"] <= 1 for x in epochs)
    else:
        assert all(x["train_loss_task"] == pytest.approx(0.3 * x["train_loss_visual_head"] + 0.1 * x["train_loss_audio_head"]
                                                         + 0.6 * x["train_loss_fused_head"], rel=1e-5) for x in epochs)
    assert all("train_top1_audio_head" in x and "train_top1_visual_head" in x for x in epochs)
    # resume from the first mid-training checkpoint: the rest of the run is the same, bit for bit
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copy(whole / "config.json", resumed / "config.json")
    first = list_checkpoints(whole / "checkpoints")[0]
    (resumed / "checkpoints").mkdir()
    shutil.copy(first, resumed / "checkpoints" / first.name)
    with caplog.at_level(logging.INFO, logger="avsf.engine"):
        train(cfg, resumed)
    assert f"resumed from {resumed / 'checkpoints' / first.name}" in caplog.text  # not a fresh start

    def strip(run):
        final = {k: v for k, v in json.loads((run / "final.json").read_text()).items() if not k.endswith("wall_time_s")}
        metrics = [{k: v for k, v in json.loads(x).items() if k not in TIMING_FIELDS}
                   for x in (run / "metrics.jsonl").read_text().splitlines()]
        return final, metrics

    assert strip(resumed) == strip(whole)


def test_gblend_weights_follow_each_heads_gain_over_its_overfitting_squared():
    start = {"visual": 2.0, "audio": 2.0, "fused": 2.0}
    w = gblend_weights(train_start=start, val_start=start,
                       train_end={"visual": 1.2, "audio": 0.5, "fused": 1.0},
                       val_end={"visual": 1.5, "audio": 1.9, "fused": 1.4})
    raw = {"visual": 0.5 / 0.3 ** 2, "audio": 0.1 / 1.4 ** 2, "fused": 0.6 / 0.4 ** 2}
    assert w == pytest.approx({k: v / sum(raw.values()) for k, v in raw.items()})
    assert sum(w.values()) == pytest.approx(1.0) and w["audio"] < 0.01  # the branch that overfits fast weighs least
    # a head whose held-out loss rose gets nothing; no head gaining is an error, not a guess
    w = gblend_weights(train_start=start, val_start=start, train_end={"visual": 1.0, "audio": 1.0, "fused": 1.0},
                       val_end={"visual": 2.1, "audio": 1.5, "fused": 1.8})
    assert w["visual"] == 0.0 and w["audio"] > 0 and w["fused"] > 0
    with pytest.raises(ValueError, match="held-out loss fell"):
        gblend_weights(train_start=start, val_start=start, train_end=start, val_end={k: 2.5 for k in start})


def test_gblend_heads_take_the_blended_loss_and_each_weight_gates_its_head():
    from avsf.engine.balance import gblend_loss
    from avsf.engine.losses import task_loss

    cfg, model = _model(balance="gblend", gblend_weights=(1.0, 0.0, 0.0))
    batch = _batch(cfg)
    model.train()
    out = model(batch, drop_audio=False)
    assert out["gblend_logits/visual"].shape == out["gblend_logits/audio"].shape == out["logits"].shape
    fused = task_loss(out, batch, head="softmax")
    blended, _ = gblend_loss(out, batch, fused=fused, weights=(0.2, 0.3, 0.5))
    expected = (0.2 * torch.nn.functional.cross_entropy(out["gblend_logits/visual"], batch["label"])
                + 0.3 * torch.nn.functional.cross_entropy(out["gblend_logits/audio"], batch["label"]) + 0.5 * fused)
    assert torch.allclose(blended, expected)
    # visual-only weight: the visual head and the visual pathways learn, the audio and fused heads do not
    gblend_loss(out, batch, fused=fused, weights=(1.0, 0.0, 0.0))[0].backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert float(grads["gblend_heads.visual.fc.weight"].abs().sum()) > 0
    assert sum(float(g.abs().sum()) for n, g in grads.items() if n.startswith("slow.") and g is not None) > 0
    for name in ("gblend_heads.audio.fc.weight", "head.fc.weight"):
        assert grads[name] is None or float(grads[name].abs().sum()) == 0, name


def test_offline_gblend_estimates_its_weights_then_trains_as_a_run_given_them(tmp_path, smoke_root, caplog):
    """model.gblend_weights=[]: each head trained alone over the window from the initial weights,
    the weights computed from its losses (gblend.json), then the run from the same start: equal,
    bit for bit, to the run that is given those weights. A resumed run keeps its estimate."""
    import logging

    from avsf.engine.balance import GBLEND_HEADS
    from avsf.engine.checkpoint import list_checkpoints
    from avsf.engine.train import train

    cfg = _train_cfg(smoke_root, "gblend").with_overrides(
        {"model.gblend_weights": "[]", "model.gblend_window_epochs": 1})
    estimated = tmp_path / "estimated"
    train(cfg, estimated)
    record = json.loads((estimated / "gblend.json").read_text())
    assert record["window_epochs"] == 1 and record["held_out"] == "val"
    assert record["weights"] == gblend_weights(train_start=record["start"]["train"], val_start=record["start"]["val"],
                                               train_end=record["end"]["train"], val_end=record["end"]["val"])
    assert sum(record["weights"].values()) == pytest.approx(1.0)
    weights = [record["weights"][k] for k in GBLEND_HEADS]
    given = tmp_path / "given"
    train(cfg.with_overrides({"model.gblend_weights": json.dumps(weights)}), given)
    assert _strip(estimated) == _strip(given)
    # resumed from a checkpoint after the estimate: not estimated again, the same run
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copy(estimated / "config.json", resumed / "config.json")
    first = list_checkpoints(estimated / "checkpoints")[0]
    shutil.copy(first, resumed / "checkpoints" / first.name)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="avsf.engine"):
        train(cfg, resumed)
    assert "resumed from" in caplog.text and "G-Blend window" not in caplog.text and not (resumed / "gblend.json").exists()
    assert _strip(resumed) == _strip(estimated)


def _strip(run):
    from avsf.engine.train import TIMING_FIELDS

    final = {k: v for k, v in json.loads((run / "final.json").read_text()).items() if not k.endswith("wall_time_s")}
    final.pop("config_hash", None), final.pop("name", None)
    metrics = [{k: v for k, v in json.loads(x).items() if k not in TIMING_FIELDS}
               for x in (run / "metrics.jsonl").read_text().splitlines()]
    return final, metrics
