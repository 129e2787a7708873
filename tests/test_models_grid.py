"""Every model a notebook's grid builds at the smoke scale survives a training step: forward
and backward of each distinct model config of every experiment (avsf.experiments), in a child
process, so a crash inside a kernel (oneDNN's strided 1x1 weight gradient corrupted the heap at
audio_beta 1/8: avsf.models.blocks.pointwise_conv) fails this test instead of killing pytest.

Inputs are the configs' own audio size and crop (the bug needed the full 64x40 log-mel), at
batch 2: the AVS negatives double the audio rows, which is enough to trip it.

Run by hand: ``PYTHONPATH=. python tests/test_models_grid.py`` (one line per model).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import avsf

BATCH = 2
TIMEOUT_S = 600  # oneDNN's bug also hangs on some thread counts (uxlfoundation/oneDNN#6035)


def grid_models() -> dict[str, tuple]:
    """'experiment/row' of the first row that builds each distinct (model config, crop) ->
    (ModelConfig with its class count filled in, train crop)."""
    from avsf.experiments import get_grid_entries, list_experiments

    out: dict[str, tuple] = {}
    seen = set()
    for name in list_experiments():
        for entry in get_grid_entries(name, scale="smoke", seeds=[0]):
            model, crop = entry.config.model, entry.config.data.train_crop
            model = dataclasses.replace(model, num_classes=model.num_classes or 5)
            if (repr(model), crop) not in seen:  # configs hold lists: compared by their repr
                seen.add((repr(model), crop))
                out[f"{name}/{entry.row}"] = (model, crop)
    return out


def train_step(model_cfg, crop: int) -> None:
    """One forward + backward in train mode, audio kept (no DropPathway draw), AVS negatives
    when the model has AVS stages; the loss sums every differentiable output."""
    import torch

    from avsf.models import build_model, example_inputs

    model = build_model(model_cfg).train()
    batch = example_inputs(model_cfg, crop=crop, batch=BATCH, with_negatives=bool(model_cfg.avs_stages),
                           generator=torch.Generator().manual_seed(0))
    kwargs = {"drop_audio": False} if model_cfg.arch == "avslowfast" else {}
    out = model(batch, **kwargs)
    losses = [v.float().mean() for v in out.values()
              if isinstance(v, torch.Tensor) and v.requires_grad and v.is_floating_point()]
    assert losses, f"no differentiable output among {sorted(out)}"
    sum(losses).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert len(missing) < len(list(model.parameters())), "backward reached no parameter"


def _child() -> None:
    import torch

    torch.set_num_threads(1)
    for key, (model_cfg, crop) in grid_models().items():
        print(f"start {key}", flush=True)  # the last 'start' without its 'ok' names a crash
        train_step(model_cfg, crop)
        print(f"ok {key}", flush=True)


def test_every_smoke_grid_model_trains_a_step_without_crashing():
    root = str(Path(avsf.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-X", "faulthandler", __file__], env=env, capture_output=True,
                          text=True, timeout=TIMEOUT_S)
    lines = proc.stdout.splitlines()
    started = [ln.split(" ", 1)[1] for ln in lines if ln.startswith("start ")]
    done = [ln.split(" ", 1)[1] for ln in lines if ln.startswith("ok ")]
    crashed = [k for k in started if k not in done]
    assert proc.returncode == 0, (f"exit {proc.returncode} in {crashed or 'setup'}; "
                                  f"stderr tail:\n{proc.stderr[-3000:]}")
    assert done == started and len(done) >= 20, lines  # every experiment's distinct models, not a few
    assert any(k.startswith("ablate_audio_capacity/beta_1_8") for k in done)


if __name__ == "__main__":
    _child()
