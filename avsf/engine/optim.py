"""The optimiser: SGD with momentum, weight decay on weights only (none on BN and biases)."""

from __future__ import annotations

import torch
from torch import nn

from avsf.config import ConfigError, SolverConfig

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def param_groups(model: nn.Module, *, weight_decay: float) -> list[dict]:
    """Two groups: conv/linear weights with ``weight_decay``; BN/LayerNorm parameters and every
    bias with none (decaying BN scales only fights the normalisation)."""
    no_decay_ids: set[int] = set()
    for module in model.modules():
        if isinstance(module, _NORM_TYPES):
            no_decay_ids.update(id(p) for p in module.parameters(recurse=False))
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if id(p) in no_decay_ids or name.endswith(".bias") or p.ndim <= 1:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay, "name": "decay"},
            {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"}]


def build_optimizer(model: nn.Module, solver: SolverConfig) -> torch.optim.Optimizer:
    """SGD as the paper's recipe (momentum 0.9, weight decay 1e-4); the lr is set every step."""
    if solver.optimizer != "sgd":
        raise ConfigError(f"solver.optimizer={solver.optimizer!r} is not allowed; choose one of sgd")
    return torch.optim.SGD(param_groups(model, weight_decay=solver.weight_decay), lr=solver.base_lr,
                           momentum=solver.momentum, nesterov=solver.nesterov and solver.momentum > 0)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
