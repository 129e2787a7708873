"""The model's math is pinned: fixed-seed forward + backward of small AVSlowFast, SlowFast and
audio-only models (AVS on, DropPathway drawn, kept and dropped, every block type and lateral)
give the stored logits, losses, gradient norms and BN running statistics, and every preset's
state_dict keeps its names and shapes (checkpoints load).

The stored values (tests/data/models_numerics.json) were computed with the code before the
speed work; speed changes must reproduce them within fp32 rounding. Regenerate them only when
the math is meant to change, and say so in the commit:

    PYTHONPATH=. python tests/test_models_numerics.py --write
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sys
import zlib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from avsf.config import ModelConfig
from avsf.models import build_model, example_inputs
from avsf.models.network import AVSlowFast
from avsf.presets import get_preset, list_presets

STORED = Path(__file__).parent / "data" / "models_numerics.json"

# The smoke presets' model as it was when the values were stored, spelled out so a later recipe
# change to the presets does not move the reference.
TINY = dict(stage_depths=(1, 1, 1, 1), width=16, num_classes=5, slow_frames=4, alpha=4, beta_inv=4,
            fusion_kernel=5, audio_frames=64, audio_mel_bins=40, dropout=0.3)

# name -> (ModelConfig changes, AVS negatives in the batch, drop_audio passed to forward)
CASES: dict[str, tuple[dict, bool, bool | None]] = {
    "avslowfast_avs_keep": (dict(arch="avslowfast"), True, False),
    "avslowfast_avs_drop_pathway": (dict(arch="avslowfast", droppathway_mode="pathway"), True, True),
    "avslowfast_sum_deep_drawn": (dict(arch="avslowfast", audio_tf_block="sum", stage_depths=(2, 2, 2, 2)),
                                  False, None),
    "avslowfast_nonlocal_avnl_avs": (dict(arch="avslowfast", av_lateral="av_nonlocal", nonlocal_res4=True,
                                          stage_depths=(1, 1, 2, 1), avs_stages=("res2", "res3")), True, False),
    "avslowfast_afs_3x3": (dict(arch="avslowfast", av_lateral="a_f_s", audio_tf_block="none"), True, False),
    "avslowfast_detect": (dict(arch="avslowfast", task="detect", avs_stages=()), False, False),
    "slowfast": (dict(arch="slowfast"), False, None),
    # Table 5b's capacities (ablate_audio_capacity): at 1/8 the Audio res3 shortcut gets 8
    # channels and at beta_inv 8 the Fast one too, the strided 1x1 path oneDNN gets wrong
    # (avsf.models.blocks.pointwise_conv)
    "avslowfast_audio_beta_1_8": (dict(arch="avslowfast", audio_beta=0.125), True, False),
    "avslowfast_audio_beta_1_4": (dict(arch="avslowfast", audio_beta=0.25), True, False),
    "avslowfast_audio_beta_1": (dict(arch="avslowfast", audio_beta=1.0), True, False),
    "slowfast_beta_inv_8": (dict(arch="slowfast", beta_inv=8), False, None),
    "audio_only": (dict(arch="audio_only"), False, None),
}
BATCH, CROP = 4, 32
LISTED = ("avslowfast_avs_keep", "slowfast", "audio_only")  # state_dict names stored in full

# fp32 rounding differs with the kernels' summation order (memory format, oneDNN vs ATen,
# the CPU's vector width); a change to the math moves these values by far more.
RTOL, ATOL = 2e-4, 2e-5
GRAD_RTOL = 2e-3


def _name_seed(name: str) -> int:
    return zlib.crc32(name.encode())


@torch.no_grad()
def fill_by_name(model: torch.nn.Module) -> None:
    """Deterministic weights that depend only on each tensor's name and shape (not on the order
    modules are built in): He-scaled normal conv/linear weights, BN gamma near 1 (the final
    BNs too, so residual branches count), small biases; running statistics at their defaults."""
    for name, t in model.state_dict().items():
        if not t.is_floating_point():
            continue
        g = torch.Generator().manual_seed(_name_seed(name))
        leaf = name.rsplit(".", 1)[-1]
        if leaf in ("running_mean", "running_var"):
            continue
        noise = torch.randn(t.shape, generator=g)
        if t.dim() >= 2:
            fan_in = t[0].numel()
            t.copy_(noise * math.sqrt(2.0 / fan_in))
        elif _is_norm_weight(model, name):
            t.copy_(1.0 + 0.1 * noise)
        else:
            t.copy_(0.1 * noise)


def _is_norm_weight(model: torch.nn.Module, name: str) -> bool:
    module_name, leaf = name.rsplit(".", 1)
    return leaf == "weight" and isinstance(model.get_submodule(module_name), torch.nn.modules.batchnorm._BatchNorm)


def _group(name: str) -> str:
    """Parameter name -> its stage ('audio.res2', 'av.res3', 'head.fc', ...)."""
    return ".".join(name.split(".")[:2])


def run_case(name: str) -> dict:
    """One training step (forward + backward, no optimiser step), then an eval forward."""
    _, negatives, drop = CASES[name]
    cfg = _case_config(name)
    model = build_model(cfg)
    fill_by_name(model)
    gen = torch.Generator().manual_seed(1)
    batch = example_inputs(cfg, crop=CROP, batch=BATCH, with_negatives=negatives, generator=gen)
    labels = torch.arange(BATCH) % cfg.num_classes
    model.train()
    torch.manual_seed(2)  # the DropPathway draw and the head's dropout
    out = model(batch, drop_audio=drop)
    loss = F.cross_entropy(out["logits"], labels)
    total = loss + out["avs_loss"] if "avs_loss" in out else loss
    total.backward()
    grads: dict[str, float] = {}
    for pname, p in model.named_parameters():
        if p.grad is not None:
            grads[_group(pname)] = grads.get(_group(pname), 0.0) + float(p.grad.double().pow(2).sum())
    stats: dict[str, float] = {}
    for bname, b in model.named_buffers():
        if bname.endswith(("running_mean", "running_var")):
            key = f"{_group(bname)}.{bname.rsplit('.', 1)[-1]}"
            stats[key] = stats.get(key, 0.0) + float(b.double().pow(2).sum())
    model.eval()
    with torch.no_grad():
        eval_logits = model(batch)["logits"]
    return {
        "logits": out["logits"].detach().tolist(),
        "loss": loss.item(),
        "avs": {k: v.item() for k, v in out.items() if k.startswith("avs_loss")},
        "grad_norms": {k: math.sqrt(v) for k, v in sorted(grads.items())},
        "running_stat_norms": {k: math.sqrt(v) for k, v in sorted(stats.items())},
        "eval_logits": eval_logits.tolist(),
    }


def state_dict_signature(cfg: ModelConfig) -> list[str]:
    """'name shape' of every state_dict entry of the model (built on the meta device)."""
    cfg = dataclasses.replace(cfg, num_classes=cfg.num_classes or 5)
    with torch.device("meta"):
        model = build_model(cfg)
    return [f"{k} {tuple(v.shape)}" for k, v in model.state_dict().items()]


def _case_config(name: str) -> ModelConfig:
    return ModelConfig(**{**TINY, **CASES[name][0]})


def paper_presets() -> list[str]:
    """The presets whose checkpoints must keep loading (the smoke presets' sizes are the recipe's
    to change; their layout is pinned by the cases above)."""
    return [p for p in list_presets() if "tiny" not in p]


def _digest(lines: list[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _stored() -> dict:
    return json.loads(STORED.read_text())


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield


@pytest.mark.parametrize("name", list(CASES))
def test_forward_backward_match_the_stored_values(name):
    ref = _stored()["cases"][name]
    got = run_case(name)
    close = dict(rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(torch.tensor(got["logits"]), torch.tensor(ref["logits"]), **close)
    torch.testing.assert_close(torch.tensor(got["eval_logits"]), torch.tensor(ref["eval_logits"]), **close)
    assert got["loss"] == pytest.approx(ref["loss"], rel=RTOL, abs=ATOL)
    assert got["avs"].keys() == ref["avs"].keys()
    for k, v in ref["avs"].items():
        assert got["avs"][k] == pytest.approx(v, rel=RTOL, abs=ATOL), k
    assert got["grad_norms"].keys() == ref["grad_norms"].keys()
    for k, v in ref["grad_norms"].items():
        assert got["grad_norms"][k] == pytest.approx(v, rel=GRAD_RTOL, abs=ATOL), k
    assert got["running_stat_norms"].keys() == ref["running_stat_norms"].keys()
    for k, v in ref["running_stat_norms"].items():
        assert got["running_stat_norms"][k] == pytest.approx(v, rel=RTOL, abs=ATOL), k


def test_the_cases_exercise_avs_and_droppathway():
    """The pinned values would not catch a change to a path they never take."""
    ref = _stored()["cases"]
    assert ref["avslowfast_avs_keep"]["avs"]["avs_loss"] > 0
    assert ref["avslowfast_avs_keep"]["grad_norms"]["av.res3"] > 0
    assert ref["avslowfast_avs_drop_pathway"]["grad_norms"]["av.res3"] == 0  # dropped: multiplied by zero
    assert ref["avslowfast_avs_keep"]["logits"] != ref["avslowfast_avs_drop_pathway"]["logits"]


@pytest.mark.parametrize("name", list(CASES))
def test_state_dict_keeps_its_names_and_shapes(name):
    got = state_dict_signature(_case_config(name))
    stored = _stored()
    if name in stored["state_dicts"]:  # listed in full, so a failure shows the names that moved
        assert got == stored["state_dicts"][name]
    assert _digest(got) == stored["case_state_dict_digests"][name]


def test_every_paper_preset_keeps_its_state_dict_names_and_shapes():
    stored = _stored()["state_dict_digests"]
    changed = [p for p in paper_presets()
               if p in stored and _digest(state_dict_signature(get_preset(p).model)) != stored[p]]
    assert not changed, f"state_dict names or shapes changed for {changed}: old checkpoints would not load"
    assert set(stored) <= set(paper_presets()), "a pinned preset was removed"


def _write() -> None:
    torch.set_num_threads(1)
    data = {
        "about": "tests/test_models_numerics.py: reference values computed with the code before the speed work",
        "torch": torch.__version__,
        "cases": {name: run_case(name) for name in CASES},
        "state_dicts": {name: state_dict_signature(_case_config(name)) for name in LISTED},
        "case_state_dict_digests": {name: _digest(state_dict_signature(_case_config(name))) for name in CASES},
        "state_dict_digests": {p: _digest(state_dict_signature(get_preset(p).model)) for p in paper_presets()},
    }
    STORED.parent.mkdir(exist_ok=True)
    STORED.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {STORED}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit(__doc__)
    _write()


def test_activations_and_their_gradients_stay_channels_last():
    """The speed work's layout (avsf.models.blocks): every BN's input and the gradient reaching
    it are channels-last, forward and backward, AVS and the F->S concatenations included (a
    layer in the default layout makes every conv around it convert on the fly).

    With two threads: on one thread PyTorch sends convs with 1x1 spatial kernels at batches
    under 16 to its native kernel, which returns the default layout (a known gap)."""
    from avsf.models.blocks import is_channels_last

    torch.set_num_threads(2)  # the autouse fixture restores one thread's setting afterwards
    cfg = _case_config("avslowfast_avs_keep")
    model = build_model(cfg).train()
    batch = example_inputs(cfg, crop=CROP, batch=BATCH, with_negatives=True, generator=torch.Generator().manual_seed(1))
    seen, wrong = [], []

    def check(name, what, t):
        seen.append(name)
        if min(t.shape[2:]) > 1 and not is_channels_last(t):  # spatial size 1: both layouts at once
            wrong.append(f"{name} {what} strides {t.stride()}")

    def hook(name):
        def fwd(_module, args, _out):
            check(name, "input", args[0])
            args[0].register_hook(lambda g: check(name, "gradient", g))
        return fwd

    for name, m in model.named_modules():
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)) and not name.startswith("audio.stem"):
            m.register_forward_hook(hook(name))
    out = model(batch, drop_audio=False)
    (F.cross_entropy(out["logits"], torch.arange(BATCH) % cfg.num_classes) + out["avs_loss"]).backward()
    assert len(seen) > 50 and not wrong, wrong
