"""Parameters and FLOPs in the fvcore convention the paper's tables use.

One multiply-add is one flop; counted in eval mode for one view (batch 1); convolutions and
linear layers count their multiply-adds (no bias), batch norm (inference) one flop per element
for the normalisation plus one for the affine transform, as fvcore 0.1.5 counts it,
attention products (non-local blocks) their multiply-adds; pooling, ReLU, additions and
softmax count nothing. The AVS projections exist only for the training loss and are left out
of both counts. Whole-size models are run on the meta device: shapes only, no memory, no
arithmetic, so counting R101 takes well under a second.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict

import torch
from torch import nn

from avsf.config import ModelConfig

AUDIO_PREFIXES = ("audio.", "av.")  # the Audio pathway and its laterals into the visual pathways
EXCLUDED_PREFIXES = ("avs.", "rot_head.")  # training-only AVS projections and rotation head (pretext)


def _conv_flops(m: nn.Module, inputs: tuple, out: torch.Tensor) -> int:
    return out.numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size)


def _linear_flops(m: nn.Module, inputs: tuple, out: torch.Tensor) -> int:
    return out.numel() * m.in_features


def _bn_flops(m: nn.Module, inputs: tuple, out: torch.Tensor) -> int:
    # fvcore's eval-mode rule: normalise (1) plus the affine scale-and-shift (1) per element
    return inputs[0].numel() * (2 if m.affine else 1)


_HANDLERS = (
    ((nn.Conv1d, nn.Conv2d, nn.Conv3d), "conv", _conv_flops),
    ((nn.Linear,), "linear", _linear_flops),
    ((nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d), "batch_norm", _bn_flops),
)


class FlopCounter:
    """Forward hooks on every counted module of `model`; after a forward, `by_module` maps a
    module's qualified name to {op kind: flops}."""

    def __init__(self, model: nn.Module) -> None:
        self.by_module: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self._hooks = []
        for name, module in model.named_modules():
            for types, kind, fn in _HANDLERS:
                if isinstance(module, types):
                    self._hooks.append(module.register_forward_hook(self._make_hook(name, kind, fn)))
            if hasattr(module, "matmul_flops"):
                self._hooks.append(module.register_forward_hook(
                    self._make_hook(name, "matmul", lambda m, i, o: m.matmul_flops(i, o))))

    def _make_hook(self, name: str, kind: str, fn):
        def hook(module, inputs, out):
            self.by_module[name][kind] += int(fn(module, inputs, out))
        return hook

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()

    def total(self, *, prefixes: tuple[str, ...] | None = None, exclude: tuple[str, ...] = ()) -> int:
        return sum(v for name, kinds in self.by_module.items() for v in kinds.values()
                   if (prefixes is None or name.startswith(prefixes)) and not name.startswith(exclude))

    def by_kind(self, *, exclude: tuple[str, ...] = ()) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for name, kinds in self.by_module.items():
            if not name.startswith(exclude):
                for k, v in kinds.items():
                    out[k] += v
        return dict(out)


def count_params(model: nn.Module, *, exclude: tuple[str, ...] = EXCLUDED_PREFIXES) -> int:
    return sum(p.numel() for name, p in model.named_parameters() if not name.startswith(exclude))


def count_model(cfg: ModelConfig, crop: int, *, width: int | None = None) -> dict:
    """{"params", "gflops", "gflops_audio", "gflops_by_op", "crop"} of `cfg` for one view at a
    `crop` x `crop` input (`crop` x `width` when given: the paper counts AVA at 256 x 320)
    and the model's audio size, eval mode, batch 1, on the meta device. A detector
    (``task="detect"``) is counted with one person box (RoIAlign and pooling count nothing,
    as in fvcore; the box's linear layer is counted).

    "gflops_audio" is the Audio pathway's and its laterals' share of "gflops". A late-fusion
    config counts both of its models. The head counted is the config's: a config with
    ``num_classes=0`` (the smoke presets: the dataset decides) is refused, so a count never
    silently assumes a class count the trained model did not have.

    Raises:
        ValueError when ``cfg.num_classes`` is not positive.
    """
    from avsf.models.network import AVSlowFast, example_inputs

    if cfg.num_classes <= 0:
        raise ValueError(f"num_classes={cfg.num_classes}: the class count is filled from the dataset when a run "
                         f"starts; count the run's config.json (its resolved model) or set model.num_classes")
    parts = ([dataclasses.replace(cfg, arch="slowfast"), dataclasses.replace(cfg, arch="audio_only")]
             if cfg.arch == "late_fusion" else [cfg])
    params = flops = flops_audio = 0
    kinds: dict[str, int] = defaultdict(int)
    for part in parts:
        with torch.device("meta"):
            model = AVSlowFast(part).eval()
        counter = FlopCounter(model)
        with torch.no_grad():
            model(example_inputs(part, crop=crop, batch=1, device="meta", width=width))
        counter.remove()
        params += count_params(model)
        flops += counter.total(exclude=EXCLUDED_PREFIXES)
        # an audio-only model is all audio
        flops_audio += counter.total(prefixes=None if part.arch == "audio_only" else AUDIO_PREFIXES,
                                     exclude=EXCLUDED_PREFIXES)
        for k, v in counter.by_kind(exclude=EXCLUDED_PREFIXES).items():
            kinds[k] += v
    return {"params": params, "gflops": flops / 1e9, "gflops_audio": flops_audio / 1e9,
            "gflops_by_op": {k: v / 1e9 for k, v in sorted(kinds.items())}, "crop": crop}
