"""Late fusion (Table 6): the test metrics of a visual-only and an audio-only run ensembled.

:class:`avsf.models.LateFusion` averages the two models' softmax scores per view; the views
and the test split are the visual run's. The compute is both models' (their final.json counts).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from avsf.engine.checkpoint import load_latest
from avsf.engine.evaluate import evaluate_model, load_run_config
from avsf.engine.io import atomic_write_json
from avsf.errors import UserError


def late_fusion_metrics(visual_dir: str | Path, audio_dir: str | Path, *, cache: str | Path | None = None) -> dict[str, Any]:
    """Test metrics of the ensemble of two finished runs of the same seed (the visual-only and
    the audio-only model), with ``params`` / ``gflops`` / ``gflops_audio`` summed over both.
    ``cache``: a JSON file the metrics are read from when it exists and written to otherwise
    (the report names it after both runs and archives it beside the table)."""
    from avsf.models import LateFusion, build_model  # noqa: PLC0415 (the model stack is heavy)

    visual_dir, audio_dir = Path(visual_dir), Path(audio_dir)
    cache = Path(cache) if cache is not None else None
    if cache is not None and cache.exists():
        return json.loads(cache.read_text())
    cfgs, models, finals = [], [], []
    for run in (visual_dir, audio_dir):
        cfg = load_run_config(run)
        found = load_latest(run / "checkpoints")
        if found is None:
            raise UserError(f"{run} has no valid checkpoint to ensemble; rerun the grid")
        model = build_model(cfg.model)
        model.load_state_dict(found[0]["model"])
        cfgs.append(cfg)
        models.append(model)
        finals.append(json.loads((run / "final.json").read_text()) if (run / "final.json").exists() else {})
    v_cfg, a_cfg = cfgs
    if (v_cfg.data.dataset, v_cfg.data.root, v_cfg.model.num_classes) != \
            (a_cfg.data.dataset, a_cfg.data.root, a_cfg.model.num_classes):
        raise UserError(f"cannot ensemble {visual_dir.name} and {audio_dir.name}: trained on different data")
    fused = LateFusion(models[0], models[1], multilabel=v_cfg.model.head == "sigmoid")
    # the dataset of a late-fusion config yields the visual and the audio inputs
    data_cfg = v_cfg.with_overrides({"model.arch": "late_fusion", "device": "cpu"})
    metrics = evaluate_model(fused, data_cfg, split="test", device=torch.device("cpu"))
    for key in ("params", "gflops", "gflops_audio"):
        values = [f.get(key) for f in finals]
        if all(isinstance(v, (int, float)) for v in values):
            metrics[key] = sum(values)
    metrics["views"] = finals[0].get("views")
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(cache, metrics)
    return metrics
