"""Learning-rate schedules, linear scaling, parameter groups and task losses."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from avsf.config import ConfigError, SolverConfig
from avsf.engine.losses import batch_top1_hits, task_loss
from avsf.engine.optim import build_optimizer, param_groups
from avsf.engine.schedules import LrSchedule, build_schedule, scaled_lr
from avsf.presets import get_preset


def test_linear_scaling_rule_matches_the_paper():
    # the paper: 1.6 at 1024 clips; the authors' config: 0.1 at 64
    assert scaled_lr(base_lr=0.1, global_batch=1024, reference_batch=64) == pytest.approx(1.6)
    solver = SolverConfig(base_lr=0.1, reference_batch=64, batch_size=8, warmup_epochs=0)
    sched = build_schedule(solver, steps_per_epoch=10, world_size=128)
    assert sched.peak == pytest.approx(1.6)
    assert sched(0) == pytest.approx(1.6)


def test_cosine_with_warmup_is_continuous_and_ends_at_zero():
    solver = SolverConfig(base_lr=0.4, reference_batch=8, batch_size=8, epochs=10, warmup_epochs=2,
                          warmup_start_lr=0.04, schedule="cosine")
    sched = build_schedule(solver, steps_per_epoch=5, world_size=2)  # global batch 16: peak 0.8
    total, warm = 50, 10
    assert sched.total_steps == total and sched.warmup_steps == warm
    assert sched(0) == pytest.approx(0.08)  # warm-up start scales with the batch too
    cosine_at_warm_end = 0.8 * 0.5 * (1 + math.cos(math.pi * warm / total))
    assert sched(warm) == pytest.approx(cosine_at_warm_end)
    assert sched(warm - 1) < sched(warm)
    assert sched(5) == pytest.approx(0.08 + (cosine_at_warm_end - 0.08) * 5 / warm)
    mid = 0.8 * 0.5 * (1 + math.cos(math.pi * 30 / total))
    assert sched(30) == pytest.approx(mid)
    assert sched(total) == pytest.approx(0.0, abs=1e-12)
    values = [sched(s) for s in range(warm, total + 1)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_epic_step_schedule_drops_tenfold_at_two_thirds_and_five_sixths():
    cfg = get_preset("avslowfast_r101_8x8_epic")
    sched = build_schedule(cfg.solver, steps_per_epoch=60, world_size=8)  # 30 epochs -> 1800 steps
    peak = cfg.solver.base_lr * cfg.solver.batch_size * 8 / cfg.solver.reference_batch
    assert sched(0) == pytest.approx(peak)
    assert sched(1199) == pytest.approx(peak)
    assert sched(1200) == pytest.approx(peak * 0.1)
    assert sched(1499) == pytest.approx(peak * 0.1)
    assert sched(1500) == pytest.approx(peak * 0.01)


def test_ssl_step_schedule_with_warmup():
    # appendix A.8: 120k iterations, lr 1.6, drops at 80k/100k/110k, warm-up 10k from 0.001
    sched = LrSchedule(peak=1.6, total_steps=120_000, warmup_steps=10_000, warmup_start=0.001, kind="steps",
                       milestones=(80 / 120, 100 / 120, 110 / 120), gamma=0.1)
    assert sched(0) == pytest.approx(0.001)
    assert sched(5_000) == pytest.approx(0.001 + (1.6 - 0.001) / 2)
    assert sched(79_999) == pytest.approx(1.6)
    assert sched(80_000) == pytest.approx(0.16)
    assert sched(100_000) == pytest.approx(0.016)
    assert sched(110_000) == pytest.approx(0.0016)


@pytest.mark.parametrize("bad", [{"schedule": "steps", "steps": ()}, {"schedule": "steps", "steps": (1.5,)}])
def test_bad_step_schedules_are_refused(bad):
    with pytest.raises(ConfigError):
        build_schedule(SolverConfig(**bad), steps_per_epoch=10, world_size=1)


def test_no_full_batch_is_a_clear_error():
    with pytest.raises(ConfigError, match="batch_size"):
        build_schedule(SolverConfig(), steps_per_epoch=0, world_size=1)


def test_no_weight_decay_on_batchnorm_and_biases():
    model = nn.Sequential(nn.Conv3d(3, 4, 3), nn.BatchNorm3d(4), nn.Flatten(), nn.Linear(4, 2))
    groups = {g["name"]: g for g in param_groups(model, weight_decay=1e-4)}
    decay = {id(p) for p in groups["decay"]["params"]}
    no_decay = {id(p) for p in groups["no_decay"]["params"]}
    assert decay == {id(model[0].weight), id(model[3].weight)}
    assert no_decay == {id(model[0].bias), id(model[1].weight), id(model[1].bias), id(model[3].bias)}
    opt = build_optimizer(model, SolverConfig(momentum=0.9, weight_decay=1e-4))
    assert [g["weight_decay"] for g in opt.param_groups] == [1e-4, 0.0]
    assert all(g["momentum"] == 0.9 for g in opt.param_groups)


def test_losses_by_head():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 4, generator=g)
    labels = torch.tensor([0, 1, 2, 3, 1])
    assert task_loss({"logits": logits}, {"label": labels}, head="softmax") == pytest.approx(
        float(-logits.log_softmax(1)[torch.arange(5), labels].mean()))
    multi = (torch.rand(5, 4, generator=g) > 0.5).float()
    p = logits.sigmoid()
    bce = -(multi * p.log() + (1 - multi) * (1 - p).log()).mean()
    assert task_loss({"logits": logits}, {"label": multi}, head="sigmoid") == pytest.approx(float(bce), rel=1e-5)
    verb_logits, noun_logits = torch.randn(5, 3, generator=g), torch.randn(5, 6, generator=g)
    verbs, nouns = torch.tensor([0, 1, 2, 0, 1]), torch.tensor([5, 4, 3, 2, 1])
    out = {"verb_logits": verb_logits, "noun_logits": noun_logits}
    batch = {"verb": verbs, "noun": nouns}
    assert task_loss(out, batch, head="epic") == pytest.approx(
        float(F.cross_entropy(verb_logits, verbs) + F.cross_entropy(noun_logits, nouns)))
    # action hit: both verb and noun right
    verb_logits[0] = torch.tensor([9.0, 0, 0]); noun_logits[0] = torch.zeros(6); noun_logits[0, 5] = 9
    verb_logits[1] = torch.tensor([9.0, 0, 0])  # wrong verb for video 1 (true verb 1)
    hits = batch_top1_hits(out, batch, head="epic")
    manual = int(((verb_logits.argmax(1) == verbs) & (noun_logits.argmax(1) == nouns)).sum())
    assert hits == manual and hits >= 1
