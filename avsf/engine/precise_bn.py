"""Precise BN: replace the running BN statistics (an exponential average over the last
training steps, of weights that kept changing) by an exact average over many batches of the
final weights."""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from torch import nn

from avsf.engine import distributed as ddp


@torch.no_grad()
def update_bn_stats(model: nn.Module, batches: Iterable[dict[str, Any]], *, num_batches: int,
                    prepare: Callable[[dict[str, Any]], dict[str, Any]] = lambda b: b) -> int:
    """Recompute every BN layer's running mean and variance as the equal-weight average over
    up to `num_batches` batches (then averaged over processes); returns the batches used.

    The model runs in training mode (batch statistics) but no parameter changes; dropout and
    DropPathway do not touch BN inputs' statistics of the layers they do not feed, and the
    audio pathway is kept on (``drop_audio=False``) so its BN sees real inputs.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns or num_batches < 1:
        return 0
    momenta = [bn.momentum for bn in bns]
    was_training = model.training
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average: every batch weighs the same
    model.train()
    used = 0
    try:
        for batch in batches:
            if used >= num_batches:
                break
            model(prepare(batch), drop_audio=False)
            used += 1
    finally:
        for bn, m in zip(bns, momenta):
            bn.momentum = m
        model.train(was_training)
    n = torch.distributed.get_world_size() if ddp.active() else 1
    if n > 1:
        for bn in bns:
            bn.running_mean.copy_(ddp.all_reduce_sum(bn.running_mean.clone()) / n)
            bn.running_var.copy_(ddp.all_reduce_sum(bn.running_var.clone()) / n)
    return used
