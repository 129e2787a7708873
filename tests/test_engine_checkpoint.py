"""Checkpoints (atomic, rotated, corrupt ones skipped) and the trainer's resume, config guard and
run-directory files, on throwaway model and data parts (tests/test_engine_fakes.py)."""

import json
import logging
import random
import threading

import numpy as np
import pytest
import torch

from avsf.engine import checkpoint as C
from avsf.engine.io import atomic_write
from avsf.engine.train import TIMING_FIELDS, train
from avsf.errors import UserError
from test_engine_fakes import install, tiny_config


def _state(step: int) -> dict:
    return {"model": {"w": torch.full((3,), float(step))}, "optimizer": {}, "step": step, "epoch": 0,
            "batch_in_epoch": step, "rng": C.capture_rng_state()}


def test_rotation_keeps_the_last_k(tmp_path):
    for step in (2, 4, 6, 8, 10):
        C.save_checkpoint(_state(step), ckpt_dir=tmp_path, keep=3)
    assert [p.name for p in C.list_checkpoints(tmp_path)] == ["ckpt-000000006.pt", "ckpt-000000008.pt",
                                                               "ckpt-000000010.pt"]
    state, path = C.load_latest(tmp_path)
    assert state["step"] == 10 and torch.equal(state["model"]["w"], torch.full((3,), 10.0))


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_newest_checkpoint_is_skipped_with_a_warning(tmp_path, caplog, damage):
    for step in (1, 2, 3):
        C.save_checkpoint(_state(step), ckpt_dir=tmp_path, keep=5)
    newest = C.checkpoint_path(tmp_path, 3)
    data = newest.read_bytes()
    newest.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"not a checkpoint" * 10, "empty": b""}[damage])
    with caplog.at_level(logging.WARNING, logger="avsf.engine"):
        state, path = C.load_latest(tmp_path)
    assert state["step"] == 2 and path == C.checkpoint_path(tmp_path, 2)
    assert str(newest) in caplog.text


def test_incomplete_state_is_not_a_valid_checkpoint(tmp_path):
    torch.save({"model": {}}, C.checkpoint_path(tmp_path, 5))
    assert C.load_latest(tmp_path) is None
    with pytest.raises(ValueError, match="lacks"):
        C.save_checkpoint({"model": {}}, ckpt_dir=tmp_path, keep=1)


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")

    def fail(f):
        f.write(b"partial")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(target, fail)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]


def test_rng_states_round_trip():
    random.seed(1); np.random.seed(2); torch.manual_seed(3)
    state = C.capture_rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(2))
    random.seed(9); np.random.seed(9); torch.manual_seed(9)
    C.restore_rng_state(state)
    got = (random.random(), np.random.rand(), torch.rand(2))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])


# --- the trainer on fake parts ---------------------------------------------------------------
def _weights(run_dir):
    state, _ = C.load_latest(run_dir / "checkpoints")
    return state["model"]


def _lines(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _strip_timing(lines):
    return [{k: v for k, v in line.items() if k not in TIMING_FIELDS} for line in lines]


def test_stopped_and_resumed_run_equals_an_uninterrupted_one(tmp_path, monkeypatch):
    made = install(monkeypatch)
    cfg = tiny_config()
    full = train(cfg, tmp_path / "full")
    steps_per_epoch = 24 // 4
    assert full["step"] == 3 * steps_per_epoch and "top1" in full
    assert made["train"].epochs_seen == [(0, 3), (1, 3), (2, 3)]  # the AVS curriculum is driven per epoch

    # stop after step 8 (mid epoch 1): a checkpoint is written there and the run returns
    stop = threading.Event()
    import avsf.engine.train as T

    original = T.Trainer._train_step

    def step_then_maybe_stop(self, batch):
        out = original(self, batch)
        if self.step + 1 == 8:
            stop.set()
        return out

    monkeypatch.setattr(T.Trainer, "_train_step", step_then_maybe_stop)
    part = train(cfg, tmp_path / "part", stop_event=stop)
    assert part == {"status": "stopped", "step": 8, "epoch": 1}
    assert C.load_latest(tmp_path / "part" / "checkpoints")[0]["batch_in_epoch"] == 2
    monkeypatch.setattr(T.Trainer, "_train_step", original)
    resumed = train(cfg, tmp_path / "part")

    for k, v in _weights(tmp_path / "full").items():
        assert torch.equal(v, _weights(tmp_path / "part")[k]), k
    assert _strip_timing(_lines(tmp_path / "full")) == _strip_timing(_lines(tmp_path / "part"))
    drop = ("test_wall_time_s", "train_wall_time_s")
    assert {k: v for k, v in full.items() if k not in drop} == {k: v for k, v in resumed.items() if k not in drop}


def test_run_directory_files(tmp_path, monkeypatch):
    install(monkeypatch)
    cfg = tiny_config(eval_every=2)
    final = train(cfg, tmp_path)
    lines = _lines(tmp_path)
    assert [line["epoch"] for line in lines if line["kind"] == "epoch"] == [1, 2, 3]
    assert lines[-1]["kind"] == "test" and lines[-1]["test_top1"] == pytest.approx(final["top1"])
    # val at epochs 2 and 3 (the last is always evaluated); the lr follows the schedule
    assert ["val_top1" in line for line in lines[:3]] == [False, True, True]
    for line in lines[:3]:
        assert {"step", "lr", "train_loss", "train_loss_task", "train_loss_avs", "train_top1", "clips_per_s",
                "wall_time_s", "peak_mem_mb", "data_wait_s", "compute_s", "data_wait_frac"} <= set(line)
        # the loop's time splits into waiting for batches and computing on them
        assert line["compute_s"] > 0 and line["data_wait_s"] >= 0
        assert line["data_wait_frac"] == pytest.approx(
            line["data_wait_s"] / (line["data_wait_s"] + line["compute_s"]), abs=1e-3)
    assert "data_wait_frac" in (tmp_path / "log.txt").read_text()
    assert lines[2]["lr"] > 0 and lines[0]["step"] == 6
    resolved = json.loads((tmp_path / "config.json").read_text())
    assert resolved["model"]["num_classes"] == 3  # filled from the dataset
    saved = json.loads((tmp_path / "final.json").read_text())
    assert saved["top1"] == final["top1"] and saved["views"] == 2 and len(saved["confusion_matrix"]) == 3
    assert "epoch 3" in (tmp_path / "log.txt").read_text()
    assert len(C.list_checkpoints(tmp_path / "checkpoints")) == cfg.keep_checkpoints
    # a rerun of a finished run returns its final.json without training again
    before = C.list_checkpoints(tmp_path / "checkpoints")
    assert train(cfg, tmp_path) == saved
    assert C.list_checkpoints(tmp_path / "checkpoints") == before


def test_different_config_is_refused_unless_fresh(tmp_path, monkeypatch):
    install(monkeypatch)
    train(tiny_config(**{"solver.epochs": 1}), tmp_path)
    other = tiny_config(**{"solver.epochs": 2})
    with pytest.raises(UserError, match=r"different config.*solver\.epochs.*--fresh"):
        train(other, tmp_path)
    final = train(other, tmp_path, fresh=True)
    assert final["epochs"] == 2
    assert json.loads((tmp_path / "config.json").read_text())["solver"]["epochs"] == 2
    log_text = (tmp_path / "log.txt").read_text()  # the fresh run's log, not the old one's
    assert "epoch 2" in log_text and "1 epochs" not in log_text


def test_resume_skips_a_corrupt_newest_checkpoint(tmp_path, monkeypatch, caplog):
    install(monkeypatch)
    cfg = tiny_config(**{"solver.epochs": 2})
    full = train(cfg, tmp_path / "full")
    run = tmp_path / "run"
    train(cfg.with_overrides({"solver.epochs": 2}), run)
    # damage the final checkpoint and drop final.json: the rerun must go back one checkpoint
    newest = C.list_checkpoints(run / "checkpoints")[-1]
    newest.write_bytes(newest.read_bytes()[:100])
    (run / "final.json").unlink()
    with caplog.at_level(logging.WARNING, logger="avsf.engine"):
        again = train(cfg, run)
    assert newest.name in caplog.text
    assert again["top1"] == full["top1"]
    for k, v in _weights(tmp_path / "full").items():
        assert torch.equal(v, _weights(run)[k]), k


def test_precise_bn_recomputes_running_statistics(tmp_path, monkeypatch):
    install(monkeypatch)
    from avsf.engine.precise_bn import update_bn_stats
    from test_engine_fakes import TinyDataset, TinyVideoNet, tiny_loader

    model = TinyVideoNet(num_classes=3)
    batches = tiny_loader(TinyDataset(), batch_size=4, shuffle=False, seed=0, epoch=0, drop_last=True)
    used = update_bn_stats(model, batches, num_batches=3)
    assert used == 3
    # exact: the mean of the per-batch means of the BN input
    feats = [model.conv(b["slow"]) for b in batches[:3]]
    expected = torch.stack([f.mean((0, 2, 3, 4)) for f in feats]).mean(0)
    assert torch.allclose(model.bn.running_mean, expected.detach(), atol=1e-6)
    assert model.bn.momentum == 0.1
    final = train(tiny_config(**{"solver.precise_bn": True, "solver.precise_bn_batches": 2}), tmp_path)
    assert C.load_latest(tmp_path / "checkpoints")[0]["precise_bn_done"] is True and "top1" in final


def test_validation_passes_do_not_change_training(tmp_path, monkeypatch):
    install(monkeypatch)
    with_val = train(tiny_config(eval_every=1), tmp_path / "val")
    without = train(tiny_config(eval_every=0), tmp_path / "noval")
    assert any("val_top1" in line for line in _lines(tmp_path / "val"))
    assert not any("val_top1" in line for line in _lines(tmp_path / "noval"))
    for k, v in _weights(tmp_path / "val").items():
        assert torch.equal(v, _weights(tmp_path / "noval")[k]), k
    assert with_val["top1"] == without["top1"]
