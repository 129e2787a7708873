"""TensorBoard event files (avsf.engine.events): written beside metrics.jsonl by the trainer,
the numbers equal to metrics.jsonl's, one history after a resume, none when switched off."""

import json

import pytest

from avsf.engine.events import event_files
from avsf.engine.train import train
from test_engine_fakes import install, tiny_config


def _scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), purge_orphaned_data=True)
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _lines(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_the_trainer_writes_losses_lr_droppathway_epoch_and_test_metrics(tmp_path, monkeypatch):
    install(monkeypatch)
    run = tmp_path / "run"
    final = train(tiny_config(log_every=2), run)
    assert len(event_files(run)) == 1
    tags = _scalars(run)
    steps = [s for s, _ in tags["train/loss"]]
    assert steps == list(range(2, 19, 2))  # 3 epochs x 6 steps, every 2nd
    for tag in ("train/loss_task", "train/lr", "train/droppathway_dropped", "train/clips_per_s"):
        assert [s for s, _ in tags[tag]] == steps, tag
    assert all(v == 0.0 for _, v in tags["train/droppathway_dropped"])  # SlowFast: never dropped
    epochs = [line for line in _lines(run) if line["kind"] == "epoch"]
    for key in ("train_loss", "val_top1", "clips_per_s", "data_wait_frac", "peak_mem_mb"):
        want = [(e["step"], pytest.approx(e[key], rel=1e-6)) for e in epochs if key in e]  # val: every 2nd epoch
        assert want and tags[f"epoch/{key}"] == want, key
    assert tags["test/top1"] == [(18, pytest.approx(final["top1"], rel=1e-6))]


def test_a_resumed_run_has_one_history_and_switched_off_writes_none(tmp_path, monkeypatch):
    """A run that crashes at step 10 has written events for step 9, after its last checkpoint
    (step 8); resumed, it computes step 9 again, and TensorBoard shows each step once."""
    install(monkeypatch)
    cfg = tiny_config()  # a checkpoint every 2 steps, events every step
    train(cfg, tmp_path / "full")
    import avsf.engine.train as T

    original = T.Trainer._train_step

    def crash_at_step_ten(self, batch):
        if self.step == 9:
            raise RuntimeError("killed")
        return original(self, batch)

    monkeypatch.setattr(T.Trainer, "_train_step", crash_at_step_ten)
    with pytest.raises(RuntimeError, match="killed"):
        train(cfg, tmp_path / "part")
    assert [s for s, _ in _scalars(tmp_path / "part")["train/loss"]] == list(range(1, 10))
    monkeypatch.setattr(T.Trainer, "_train_step", original)
    train(cfg, tmp_path / "part")
    assert len(event_files(tmp_path / "part")) == 2  # one file per session
    full, part = _scalars(tmp_path / "full"), _scalars(tmp_path / "part")
    for tag in ("train/loss", "train/lr", "epoch/train_loss", "epoch/val_top1"):
        assert part[tag] == full[tag], tag  # each step once, with the uninterrupted run's value

    off = train(cfg.with_overrides({"tensorboard": False}), tmp_path / "off")
    assert event_files(tmp_path / "off") == []
    assert cfg.with_overrides({"tensorboard": False}).config_hash() == cfg.config_hash()
    assert off["top1"] == json.loads((tmp_path / "full" / "final.json").read_text())["top1"]
