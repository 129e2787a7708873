"""The engine's tasks (avsf/engine/tasks.py) and the one DropPathway draw.

``test_reference_runs_are_unchanged`` reruns four short runs (tests/task_runs.py: classify,
detect, pretrain, probe) and compares their final.json, metrics.jsonl and the evaluator's
final.json with the files the code before the task interface wrote (tests/reference/tasks.json),
field for field, timing fields aside.
"""

from __future__ import annotations

import json

import pytest

import task_runs
from conftest import test_data_dir


# Floats may differ in their last digits between CPUs of one model name whose vector units differ
# (the same code at 89e74e3 gave train_loss 3.1216352 on an AVX2 EPYC, 3.12163496 on an AVX512
# one: 8e-8 relative); a change of the computation moves them by far more (a decoding fix: 2e-5).
FLOAT_RTOL = 1e-6


def _diff(a, b, path=""):
    """Paths where two JSON values differ (for a readable failure); floats within FLOAT_RTOL."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str) for d in _diff(a.get(k, "<missing>"), b.get(k, "<missing>"),
                                                                         f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _diff(x, y, f"{path}[{i}]")]
    if isinstance(a, float) and isinstance(b, float) and abs(a - b) <= FLOAT_RTOL * max(abs(a), abs(b)):
        return []
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def test_the_float_tolerance_tells_rounding_from_a_change():
    assert not _diff({"x": [3.1216352]}, {"x": [3.12163496]})
    assert _diff({"x": [3.12157106]}, {"x": [3.12163496]})
    assert _diff({"top1": 10}, {"top1": 10.5})


def test_reference_runs_are_unchanged(tmp_path):
    reference = json.loads(task_runs.REFERENCE.read_text())
    if reference["environment"] != task_runs.environment():
        pytest.skip(f"reference recorded with {reference['environment']}, this is {task_runs.environment()}: "
                    f"floats may round differently; record it here with `python tests/task_runs.py --record` "
                    f"on the commit before a change to compare across it")
    runs = task_runs.run_all(tmp_path, test_data_dir())
    assert set(runs) == set(reference["runs"])
    # JSON round trip: tuples become lists as in the file
    differences = _diff(json.loads(json.dumps(runs)), reference["runs"])
    assert not differences, "\n".join(differences[:20])


# --- the task interface ----------------------------------------------------------------------------
def _cfg(preset, *overrides):
    from avsf.presets import get_preset

    return get_preset(preset).with_overrides(["model.num_classes=5", "data.num_workers=0", *overrides])


def test_every_config_task_has_one_engine_task():
    from avsf.config import TASKS as CONFIG_TASKS
    from avsf.engine.tasks import TASKS, ClassificationTask, DetectionTask, PretrainTask, task_for

    assert set(TASKS) == set(CONFIG_TASKS)
    for preset, cls, split in (("avslowfast_tiny", ClassificationTask, "test"),
                               ("avslowfast_tiny_ava", DetectionTask, "test"),
                               ("avslowfast_pretrain_tiny", PretrainTask, "val")):
        task = task_for(_cfg(preset))
        assert type(task) is cls and task.final_split == split
    import dataclasses

    from avsf.errors import UserError

    cfg = _cfg("avslowfast_tiny")
    with pytest.raises(UserError, match="model.task='segment' has no engine task; choose one of classify"):
        task_for(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, task="segment")))


def test_trainer_and_evaluator_name_no_task():
    """What differs by task is the task's: the loops hold no branch on it."""
    from pathlib import Path

    import avsf.engine.evaluate as ev
    import avsf.engine.train as tr

    for module in (tr, ev):
        source = Path(module.__file__).read_text()
        for word in ('"pretrain"', '"detect"', '"classify"', "is_pretrain", "model.task", "ssl."):
            assert word not in source, f"{Path(module.__file__).name} mentions {word}"


def _clips(n=4, seed=0):
    import torch

    g = torch.Generator().manual_seed(seed)
    return {"slow": torch.randint(0, 255, (n, 3, 2, 8, 8), generator=g, dtype=torch.uint8),
            "fast": torch.randint(0, 255, (n, 3, 4, 8, 8), generator=g, dtype=torch.uint8),
            "audio": torch.randn(n, 1, 16, 8, generator=g), "label": torch.arange(n) % 5,
            "video_index": torch.arange(n), "view_index": torch.tensor([0, 1] * (n // 2))}


def test_classification_batch_is_the_moved_batch_and_its_loss_the_head_loss():
    import torch

    from avsf.engine import runtime
    from avsf.engine.losses import batch_top1_hits, task_loss
    from avsf.engine.tasks import task_for

    cfg = _cfg("avslowfast_tiny")
    task = task_for(cfg)
    raw = _clips()
    batch = task.prepare_batch(raw, device=torch.device("cpu"), step=3)
    moved = runtime.batch_to_device(raw, cfg, torch.device("cpu"))
    assert batch.keys() == moved.keys() and all(torch.equal(batch[k], moved[k]) for k in batch)
    assert batch["slow"].dtype == torch.float32  # normalised on the device
    out = {"logits": torch.randn(4, 5, generator=torch.Generator().manual_seed(1))}
    step = task.loss(out, batch)
    assert torch.equal(step.loss, task_loss(out, batch, head="softmax"))
    assert step.hits == batch_top1_hits(out, batch, head="softmax") and step.logs == {}


def test_pretrain_batches_rotate_by_the_step_draw_in_training_and_by_the_view_in_evaluation():
    import torch

    from avsf.engine.tasks import task_for
    from avsf.engine.tasks.pretrain import draw_rotations, rotate_clips

    cfg = _cfg("avslowfast_pretrain_tiny")
    task = task_for(cfg)
    cpu = torch.device("cpu")
    raw = _clips()
    plain = task_for(_cfg("avslowfast_tiny")).prepare_batch(raw, device=cpu)
    train = task.prepare_batch(raw, device=cpu, step=7, rank=1)
    expected = rotate_clips(plain, draw_rotations(4, seed=cfg.seed, step=7, rank=1))
    assert torch.equal(train["rot_label"], expected["rot_label"]) and torch.equal(train["slow"], expected["slow"])
    assert "audio_neg" not in train  # training negatives come from the data side
    assert torch.equal(task.prepare_batch(raw, device=cpu, step=8, rank=0)["rot_label"],
                       draw_rotations(4, seed=cfg.seed, step=8, rank=0))
    val = task.prepare_batch(raw, device=cpu)
    assert val["rot_label"].tolist() == [(v + w) % 4 for v, w in zip(raw["video_index"].tolist(),
                                                                     raw["view_index"].tolist())]
    assert torch.equal(val["audio_neg"], plain["audio"].roll(1, dims=0))  # easy negatives: the next clip's audio
    # ROT only: no negatives; AVS only: no rotation
    assert "audio_neg" not in task_for(_cfg("slowfast_pretrain_tiny")).prepare_batch(raw, device=cpu)
    avs_only = task_for(_cfg("avslowfast_pretrain_tiny", "model.pretext=avs"))
    assert "rot_label" not in avs_only.prepare_batch(raw, device=cpu, step=7)
    assert float(avs_only.loss({"avs_loss": torch.tensor(0.3)}, plain).loss) == 0.0


def test_pretrain_loss_is_the_weighted_rotation_cross_entropy():
    import torch
    import torch.nn.functional as F

    from avsf.engine.tasks import task_for

    task = task_for(_cfg("avslowfast_pretrain_tiny", "model.rot_weight=0.5"))
    logits = torch.randn(6, 4, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    step = task.loss({"rot_logits": logits}, {"rot_label": labels})
    ce = F.cross_entropy(logits, labels)
    hits = int((logits.argmax(1) == labels).sum())
    assert float(step.loss) == pytest.approx(0.5 * float(ce)) and step.hits == hits
    assert step.logs == pytest.approx({"loss_rot": float(ce), "rot_top1": 100.0 * hits / 6})


def test_headlines_and_final_fields():
    from avsf.engine.tasks import task_for

    classify, pretrain = task_for(_cfg("avslowfast_tiny")), task_for(_cfg("avslowfast_pretrain_tiny"))
    metrics = {"top1": 50.1234567, "top5": 90.0, "loss_task": 1.5, "per_class_accuracy": {}}
    assert classify.headline(metrics, prefix="val") == {"val_top1": 50.123457, "val_top5": 90.0, "val_loss_task": 1.5}
    assert classify.headline({"map": 12.5}, prefix="test") == {"test_map": 12.5}
    assert classify.metrics_from_headline({"val_top1": 50.0}, prefix="val") is None  # a headline holds only some
    pretext = {"rot_top1": 25.0, "loss_rot": 1.25, "loss_avs": 0.5}
    line = {"kind": "epoch", "train_loss": 2.0, **pretrain.headline(pretext, prefix="val")}
    assert pretrain.metrics_from_headline(line, prefix="val") == pretext
    assert pretrain.metrics_from_headline({"kind": "epoch"}, prefix="val") is None  # not evaluated that epoch
    assert classify.final_fields() == {} and pretrain.final_fields() == {"task": "pretrain", "pretext": ["avs", "rot"]}


def test_detectors_are_counted_at_the_short_side_times_1_25():
    from avsf.engine.tasks import task_for

    cfg = _cfg("avslowfast_tiny_ava")
    assert task_for(cfg).cost_input_size(cfg.data) == (cfg.data.test_short_side,
                                                       int(round(cfg.data.test_short_side * 1.25)))
    cls = _cfg("avslowfast_tiny")
    assert task_for(cls).cost_input_size(cls.data) == (cls.data.test_crop, None)


def test_the_evaluation_loop_sees_every_item_once_in_eval_mode_and_restores_the_mode(monkeypatch):
    import torch

    from test_engine_fakes import TinyVideoNet, install, tiny_config

    from avsf.engine import runtime
    from avsf.engine.tasks import evaluation_batches, task_for

    install(monkeypatch, views=2, num_videos=10)
    cfg = tiny_config(**{"model.num_classes": 3, "solver.batch_size": 4})
    dataset = runtime.build_dataset(cfg, "val")
    model = TinyVideoNet(num_classes=3).train()
    modes, seen = [], []
    for batch, out in evaluation_batches(model, dataset, task=task_for(cfg), device=torch.device("cpu")):
        modes.append(model.training)
        assert out["logits"].shape == (len(batch["video_index"]), 3) and not out["logits"].requires_grad
        seen += list(zip(batch["video_index"].tolist(), batch["view_index"].tolist()))
    assert modes and not any(modes) and model.training
    assert sorted(seen) == [(v, w) for v in range(10) for w in range(2)]
    metrics = task_for(cfg).evaluate(model, dataset, device=torch.device("cpu"))
    assert metrics["num_videos"] == 10 and metrics["views_per_video"] == 2 and model.training


# --- the one DropPathway draw ------------------------------------------------------------------------
def test_droppathway_draws_only_when_it_can_fire_and_at_rate_p():
    import dataclasses

    import torch

    from avsf.models.droppathway import can_drop, draw_droppathway
    from avsf.presets import get_preset

    base = get_preset("avslowfast_tiny").model
    off = [dataclasses.replace(base, droppathway_rate=0.0), dataclasses.replace(base, arch="slowfast"),
           dataclasses.replace(base, arch="audio_only")]
    for cfg in off:
        g = torch.Generator().manual_seed(0)
        state = g.get_state()
        assert not can_drop(cfg) and not draw_droppathway(cfg, generator=g)
        assert torch.equal(g.get_state(), state)  # no random number drawn: the other draws stay as they were
    cfg = dataclasses.replace(base, droppathway_rate=0.8)
    g = torch.Generator().manual_seed(0)
    draws = [draw_droppathway(cfg, generator=g) for _ in range(4000)]
    assert sum(draws) / len(draws) == pytest.approx(0.8, abs=0.025)  # ~4 standard deviations
    g = torch.Generator().manual_seed(5)
    assert draw_droppathway(cfg, generator=g) == bool(torch.rand((), generator=torch.Generator().manual_seed(5)) < 0.8)


def test_trainer_and_model_draw_through_the_one_function(monkeypatch):
    """Switch the rate-and-architecture check off in avsf.models.droppathway: neither the
    trainer's draw nor the model's own draw can fire any more."""
    import dataclasses

    import torch

    from avsf.engine import runtime
    from avsf.engine.train import Trainer
    from avsf.models import build_model, droppathway
    from avsf.presets import get_preset

    cfg = get_preset("avslowfast_tiny").with_overrides(["model.num_classes=5", "model.droppathway_rate=0.9"])
    trainer = Trainer.__new__(Trainer)  # only the draw: no data, no model
    trainer.cfg = cfg
    model = build_model(dataclasses.replace(cfg.model)).train()
    torch.manual_seed(0)
    fired = []
    for step in range(20):
        trainer.step = step
        expected = droppathway.draw_droppathway(
            cfg.model, generator=torch.Generator().manual_seed(runtime.derive_seed(cfg.seed, "droppathway", step)))
        assert trainer._drop_audio() is expected
        fired += [expected, model.draw_drop(None)]
    assert any(fired)
    monkeypatch.setattr(droppathway, "can_drop", lambda cfg: False)
    for step in range(20):
        trainer.step = step
        assert not trainer._drop_audio() and not model.draw_drop(None)
    assert model.draw_drop(True) and not model.eval().draw_drop(True)  # an explicit draw is the caller's
