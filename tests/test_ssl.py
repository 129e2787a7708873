"""Self-supervised pretraining (rotation, AVS) and transfer (init_from, freeze), the synthetic
UCF101 / HMDB51 views and the table8_ssl grid. Tiny models; the one end-to-end test pretrains
and probes on the smallest views (about 20 s on one core)."""

import json

import pytest
import torch

from avsf import experiments as E
from avsf.config import ConfigError
from avsf.data.synthetic import views as V
from avsf.engine import transfer
from avsf.engine.tasks import pretrain as P
from avsf.engine.tasks import task_for
from avsf.engine.checkpoint import save_checkpoint
from avsf.engine.optim import build_optimizer
from avsf.errors import UserError
from avsf.models import build_model, example_inputs
from avsf.presets import get_preset

from conftest import test_data_dir


def _cfg(preset, *overrides):
    return get_preset(preset).with_overrides(["model.num_classes=5", *overrides])


def _save(model, run_dir, *, step=7):
    state = {"model": model.state_dict(), "optimizer": {}, "step": step, "epoch": 1, "batch_in_epoch": 0,
             "rng": {}, "config_hash": "abc123"}
    path = save_checkpoint(state, ckpt_dir=run_dir / "checkpoints", keep=2)
    (run_dir / "final.json").write_text("{}")  # a finished run: init_from refuses one still training
    return path


# --- rotation --------------------------------------------------------------------------------------
def test_rotation_is_rot90_of_every_frame_of_both_pathways():
    g = torch.Generator().manual_seed(0)
    batch = {"slow": torch.randn(4, 3, 2, 8, 8, generator=g), "fast": torch.randn(4, 3, 8, 8, 8, generator=g),
             "audio": torch.randn(4, 1, 16, 10, generator=g)}
    labels = torch.tensor([0, 1, 2, 3])
    out = P.rotate_clips(batch, labels)
    assert torch.equal(out["rot_label"], labels)
    assert torch.equal(out["audio"], batch["audio"])  # audio untouched
    for key in ("slow", "fast"):
        for i, k in enumerate(labels.tolist()):
            for t in range(batch[key].shape[2]):
                want = torch.rot90(batch[key][i, :, t], k, dims=(-2, -1))
                assert torch.equal(out[key][i, :, t], want), (key, i, t)
    assert not torch.equal(out["slow"][1], batch["slow"][1])


def test_rotations_are_a_function_of_seed_and_step():
    a = P.draw_rotations(64, seed=3, step=10)
    assert torch.equal(a, P.draw_rotations(64, seed=3, step=10))
    assert not torch.equal(a, P.draw_rotations(64, seed=3, step=11))
    assert set(a.tolist()) == {0, 1, 2, 3}


def test_rotation_loss_decreases_on_a_tiny_overfit_batch(one_torch_thread):
    torch.manual_seed(0)
    cfg = _cfg("slowfast_pretrain_tiny")
    model = build_model(cfg.model).train()
    assert model.head is None and model.rot_head is not None
    x = example_inputs(cfg.model, crop=32, batch=2, generator=torch.Generator().manual_seed(1))
    ramp = torch.linspace(-2, 2, 32).view(1, 1, 1, 32, 1)  # an orientation to see
    clips = {k: torch.cat([v + ramp] * 4) for k, v in x.items()}
    batch = P.rotate_clips(clips, torch.arange(4).repeat_interleave(2))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(12):
        step = task_for(cfg).loss(model(batch), batch)
        loss, stats = step.loss, step.logs
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert set(stats) == {"loss_rot", "rot_top1"}
    assert losses[-1] < 0.5 * losses[0], losses


def test_pretrain_config_is_checked():
    base = get_preset("avslowfast_tiny")
    with pytest.raises(ConfigError, match="needs model.pretext"):
        base.with_overrides(["model.task=pretrain"])
    with pytest.raises(ConfigError, match="pretext avs needs audio"):
        get_preset("slowfast_tiny").with_overrides(["model.task=pretrain", "model.pretext=avs"])
    with pytest.raises(ConfigError, match="set model.avs_stages=\\[\\]"):
        base.with_overrides(["model.task=pretrain", "model.pretext=rot"])
    with pytest.raises(ConfigError, match="model.pretext item='jigsaw' is not allowed"):
        base.with_overrides(["model.task=pretrain", "model.pretext=jigsaw"])
    with pytest.raises(ConfigError, match="needs model.task=pretrain"):
        base.with_overrides(["model.pretext=rot"])
    with pytest.raises(ConfigError, match="model.freeze='all' is not allowed"):
        base.with_overrides(["model.freeze=all"])


def test_avs_pretext_gives_a_loss_in_training_and_eval():
    torch.manual_seed(0)
    cfg = _cfg("avslowfast_pretrain_tiny")
    model = build_model(cfg.model)
    batch = example_inputs(cfg.model, crop=32, batch=3, with_negatives=True)
    out = model.train()(batch, drop_audio=True)
    assert {"rot_logits", "avs_loss", "avs_loss/res3"} <= set(out) and "logits" not in out
    assert "avs_loss" in model.eval()(batch)


# --- transfer -------------------------------------------------------------------------------------
def _pretrained(tmp_path, preset="avslowfast_pretrain_tiny", *overrides):
    torch.manual_seed(1)
    pre = build_model(_cfg(preset, *overrides).model)
    with torch.no_grad():  # make BN buffers differ from a fresh model's too
        for name, b in pre.named_buffers():
            if b.dtype.is_floating_point:
                b.add_(0.5)
    run = tmp_path / "pt-run"
    path = _save(pre, run)
    return pre, run, path


def test_init_from_loads_exactly_the_backbone_and_skips_the_heads(tmp_path):
    pre, run, path = _pretrained(tmp_path)
    cfg = _cfg("avslowfast_tiny", "model.avs_stages=[]", f"model.init_from={run.name}")
    torch.manual_seed(2)
    model = build_model(cfg.model)
    head_before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("head.")}
    source = transfer.apply_transfer(model, cfg, tmp_path / "probe-run")  # relative: beside the probe run
    assert source["path"] == str(path) and source["step"] == 7 and source["config_hash"] == "abc123"
    assert json.loads((tmp_path / "probe-run" / transfer.INIT_RECORD).read_text())["path"] == str(path)
    mine, theirs = model.state_dict(), pre.state_dict()
    backbone = [k for k in mine if not k.startswith("head.")]
    assert backbone and source["tensors_loaded"] == len(backbone)
    for k in backbone:
        assert torch.equal(mine[k], theirs[k]), k
    for k, v in head_before.items():
        assert torch.equal(mine[k], v), k  # the head is this model's own
    assert any(k.startswith("rot_head.") for k in theirs) and any(k.startswith("avs.") for k in theirs)
    # a checkpoint file works as well
    other = build_model(cfg.model)
    transfer.apply_transfer(other, cfg.with_overrides([f"model.init_from={path}"]), tmp_path / "x")
    assert torch.equal(other.state_dict()[backbone[0]], theirs[backbone[0]])


def test_freeze_backbone_trains_only_the_classifier_with_bn_in_eval(tmp_path, one_torch_thread):
    _, run, _ = _pretrained(tmp_path)
    cfg = _cfg("avslowfast_tiny", "model.avs_stages=[]", f"model.init_from={run}", "model.freeze=backbone")
    model = build_model(cfg.model)
    transfer.apply_transfer(model, cfg, tmp_path / "probe-run")
    opt = build_optimizer(model, cfg.solver)
    trainable = [p for g in opt.param_groups for p in g["params"]]
    assert {id(p) for p in trainable} == {id(model.head.fc.weight), id(model.head.fc.bias)}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert bns and not any(m.training for m in bns)
    assert model.head.training and not model.draw_drop(True)  # no DropPathway on frozen features
    batch = example_inputs(cfg.model, crop=32, batch=4)
    labels = torch.tensor([0, 1, 2, 3])
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(model(batch)["logits"], labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = model.state_dict()
    for k, v in before.items():
        if k.startswith("head.fc."):
            assert not torch.equal(after[k], v), k
        else:
            assert torch.equal(after[k], v), k  # weights and BN statistics bit-identical
    assert all(p.grad is None for n, p in model.named_parameters() if not n.startswith("head.fc."))


def test_init_from_errors_name_the_problem(tmp_path):
    cfg = _cfg("avslowfast_tiny", "model.avs_stages=[]")
    model = build_model(cfg.model)
    with pytest.raises(UserError, match="does not exist.*relative paths resolve against"):
        transfer.apply_transfer(model, cfg.with_overrides(["model.init_from=nope"]), tmp_path / "run")
    (tmp_path / "empty-run").mkdir()
    with pytest.raises(UserError, match="has no valid checkpoint yet"):
        transfer.apply_transfer(model, cfg.with_overrides(["model.init_from=empty-run"]), tmp_path / "run")
    unfinished = _save(model, tmp_path / "still-training")
    (tmp_path / "still-training" / "final.json").unlink()
    with pytest.raises(UserError, match="has not finished .no final.json.*checkpoint files"):
        transfer.apply_transfer(model, cfg.with_overrides(["model.init_from=still-training"]), tmp_path / "run")
    transfer.apply_transfer(model, cfg.with_overrides([f"model.init_from={unfinished}"]), tmp_path / "run")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a readable avsf checkpoint"):
        transfer.apply_transfer(model, cfg.with_overrides([f"model.init_from={bad}"]), tmp_path / "run")
    _, run, _ = _pretrained(tmp_path, "avslowfast_pretrain_tiny", "model.width=8")
    with pytest.raises(UserError, match=r"shape mismatch at audio\.res2.* \(296 in all\)"):
        transfer.apply_transfer(model, cfg.with_overrides([f"model.init_from={run}"]), tmp_path / "run")
    sf = build_model(_cfg("slowfast_pretrain_tiny").model)
    _save(sf, tmp_path / "sf-run")
    with pytest.raises(UserError, match="missing from the checkpoint: audio"):
        transfer.apply_transfer(model, cfg.with_overrides(["model.init_from=sf-run"]), tmp_path / "run")


# --- data views and the grid -------------------------------------------------------------------------
def test_ucf101_and_hmdb51_views_parse_in_the_official_formats(smoke_root):
    from avsf.data.datasets import ucf_hmdb

    ucf = V.ensure_synthetic_view(kind="ucf101", synthetic_root=test_data_dir(), scale="smoke")
    hmdb = V.ensure_synthetic_view(kind="hmdb51", synthetic_root=test_data_dir(), scale="smoke")
    from avsf.data.synthetic import CLASSES

    first = "".join(w.capitalize() for w in CLASSES[0].name.split())  # "door opening" -> DoorOpening
    assert (ucf / "classInd.txt").read_text().startswith(f"1 {first}\n")
    assert (ucf / "trainlist01.txt").read_text().startswith(f"{first}/v_{first}_g01_c01.avi 1\n")
    for split, n in (("train", 80), ("test", 40)):
        listing = ucf_hmdb.read_split_ucf101(root=ucf, split_dir=ucf, split=split)
        assert (len(listing.records), listing.num_classes, listing.bad_lines) == (n, 20, [])
        assert all(__import__("os").path.exists(r.path) for r in listing.records)
    for split, n in (("train", 40), ("val", 20), ("test", 20)):
        listing = ucf_hmdb.read_split_hmdb51(root=hmdb, split_dir=hmdb, split=split)
        assert (len(listing.records), listing.num_classes, listing.bad_lines) == (n, 10, [])
    split_file = hmdb / f"{CLASSES[0].name.replace(' ', '_')}_test_split1.txt"
    assert " 0 \n" in split_file.read_text()  # unused clips listed as 0


def test_grid_transfer_rows_start_from_their_pretrain_rows():
    entries = {e.row: e.config for e in E.get_grid_entries("table8_ssl", scale="smoke", seeds=[0])}
    pre = entries["pt_avsf_avs_rot"]
    for key in ("probe_avsf_avs_rot_ucf101", "ft_avsf_avs_rot_hmdb51"):
        assert entries[key].model.init_from == f"{pre.name}-{pre.config_hash()}"
    assert entries["probe_sf_rot_hmdb51"].model.init_from.startswith("slowfast_pretrain_tiny-")
    assert entries["probe_scratch_ucf101"].model.init_from == "" and entries["probe_scratch_ucf101"].model.freeze == "backbone"
    assert entries["ft_scratch_ucf101"].model.freeze == "none"
    assert entries["pt_avsf_rot"].model.pretext == ("rot",) and entries["pt_avsf_avs"].model.pretext == ("avs",)
    shared = E.row_config("fig3_learning_dynamics", "audio_only", scale="smoke", seed=0)
    assert entries["audio_only"].config_hash() == shared.config_hash()  # the run other notebooks share
    paper = {e.row: e.config for e in E.get_grid_entries(
        "table8_ssl", scale="paper", seeds=[0], data_roots={"kinetics": "/", "ucf101": "/", "hmdb51": "/", "kinetics600": "/"})}
    assert paper["audio_only_k600"].model.num_classes == 600 and paper["audio_only_k600"].data.dataset == "kinetics600"
    p = paper["pt_avsf_avs_rot"].solver
    assert (p.schedule, p.epochs, round(p.warmup_epochs, 2)) == ("steps", 512, 42.67)
    assert paper["probe_avsf_avs_rot_ucf101"].solver.epochs == 2147
    assert paper["ft_avsf_avs_rot_hmdb51"].solver.base_lr == 0.01


def test_pretrain_then_probe_end_to_end(tmp_path, smoke_root):
    from avsf.engine.train import train

    roots = {"data.synthetic_root": str(test_data_dir()), "data.num_workers": 0, "solver.epochs": 1}
    pt_root = V.ensure_synthetic_view(kind="ssl_pretrain", synthetic_root=test_data_dir(), scale="smoke")
    hmdb = V.ensure_synthetic_view(kind="hmdb51", synthetic_root=test_data_dir(), scale="smoke")
    pre = get_preset("avslowfast_pretrain_tiny").with_overrides(
        {**roots, "data.dataset": "kinetics", "data.root": str(pt_root), "checkpoint_every": 4,
         "keep_checkpoints": 5})
    final = train(pre, tmp_path / "pt")
    assert final["task"] == "pretrain" and final["split"] == "val"
    assert {"rot_top1", "loss_rot", "loss_avs"} <= set(final) and "top1" not in final
    epoch = json.loads((tmp_path / "pt" / "metrics.jsonl").read_text().splitlines()[0])
    assert {"train_loss_rot", "train_rot_top1", "train_loss_avs", "val_rot_top1", "val_loss_avs"} <= set(epoch)
    # resume from the step-4 checkpoint: rotations, DropPathway and negatives are drawn again exactly
    resumed = tmp_path / "pt-resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    (resumed / "config.json").write_text((tmp_path / "pt" / "config.json").read_text())
    ckpt = tmp_path / "pt" / "checkpoints" / "ckpt-000000004.pt"
    (resumed / "checkpoints" / ckpt.name).write_bytes(ckpt.read_bytes())
    assert train(pre, resumed)["rot_top1"] == final["rot_top1"]
    a = torch.load(tmp_path / "pt" / "checkpoints" / "ckpt-000000010.pt", weights_only=True)["model"]
    b = torch.load(resumed / "checkpoints" / "ckpt-000000010.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    probe = get_preset("avslowfast_tiny").with_overrides(
        {**roots, "data.dataset": "hmdb51", "data.root": str(hmdb), "model.avs_stages": "[]",
         "model.init_from": "pt", "model.freeze": "backbone", "data.num_temporal_views": 1, "eval_every": 0})
    final = train(probe, tmp_path / "probe")
    assert final["init_from"]["config_hash"] == pre.with_overrides({"model.num_classes": 20}).config_hash()
    assert final["init_from"]["path"].endswith("ckpt-000000010.pt") and 0 <= final["top1"] <= 100
