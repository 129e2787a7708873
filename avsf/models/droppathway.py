"""DropPathway (section 4): in each training iteration, with probability ``droppathway_rate``
P_d, the audio pathway's contributions to the visual pathways are dropped (how, per
``droppathway_mode``: :mod:`avsf.models.network`).

The decision is made here, once per iteration: the trainer draws it from a generator seeded by
(seed, step) and passes it to the model as ``drop_audio`` (so every DDP rank and a resumed run
draw alike); a model called without one draws from torch's RNG through the same function.
"""

from __future__ import annotations

import torch

from avsf.config import ModelConfig


def has_audio_laterals(cfg: ModelConfig) -> bool:
    """Whether the model has audio->visual laterals for DropPathway to drop (arch avslowfast)."""
    return cfg.arch == "avslowfast"


def can_drop(cfg: ModelConfig) -> bool:
    """Whether a draw can ever fire: P_d > 0 and audio laterals to drop."""
    return cfg.droppathway_rate > 0 and has_audio_laterals(cfg)


def draw_droppathway(cfg: ModelConfig, *, generator: torch.Generator | None = None) -> bool:
    """One iteration's draw: True (drop) with probability P_d. False, drawing no random number,
    when no draw can fire (:func:`can_drop`)."""
    return can_drop(cfg) and bool(torch.rand((), generator=generator).item() < cfg.droppathway_rate)
