"""Modality balancing in the training step, beyond DropPathway (``model.balance``, issue 16):
OGM-GE and Gradient-Blending.

OGM-GE: On-the-fly Gradient Modulation with Generalisation Enhancement (Peng, Wei, Deng, Wang,
Hu, "Balanced Multimodal Learning via On-the-fly Gradient Modulation", CVPR 2022). Each step,
after the backward pass of the fused loss and before the optimiser:

- Eq. 9: each modality's score over the batch, ``s_u = sum_i softmax(W_u phi_u(x_i) + b/2)[y_i]``,
  from its half of the fused linear head (:func:`avsf.models.network.unimodal_logits`);
- Eq. 10: the discrepancy ratio ``rho_v = s_v / s_a`` (``rho_a = 1 / rho_v``) and the
  coefficient ``k_u = 1 - tanh(alpha * rho_u)`` for the modality that leads (``rho_u > 1``), 1
  for the other;
- Eq. 11: the leading encoder's gradient scaled, ``g_u <- k_u g_u``;
- GE (section 3.3): Gaussian noise of the gradient's own spread added to both encoders'
  gradients, ``g_u <- k_u g_u + h``, ``h ~ N(0, std(g_u)^2)``, the std taken per tensor of the
  unmodulated gradient, as the authors' code estimates the SGD noise covariance.

As in the authors' code, only the encoders' convolution kernels are modulated (BN parameters
and biases are not), and only in epochs ``[ogm_start_epoch, ogm_end_epoch]``. On AVSlowFast the
visual encoder is the Slow and Fast pathways with their Fast->Slow laterals, the audio encoder is
the Audio pathway; the audio->visual laterals and the AVS projections are fusion, left as they
are. Where the paper's Eq. 10 and the authors' code differ (at ``rho_v == 1`` the code damps
audio), the paper is followed: neither is damped.

Gradient-Blending (Wang, Tran, Feiszli, "What Makes Training Multi-modal Classification Networks
Hard?", CVPR 2020): a visual-only and an audio-only head beside the fused one (on the pooled
visual and audio features, :class:`avsf.models.network.AVSlowFast`), trained with the blended
loss ``L = w_v L_v + w_a L_a + w_av L_av`` (:func:`gblend_loss`; ``model.gblend_weights``). The
weights come from each head's overfitting-to-generalisation ratio over a window of training
(section 3.2, Eq. 6-7; :func:`gblend_weights`): ``G_k = L^V_k(N) - L^V_k(N + n)`` the drop of its
held-out loss, ``O_k = L^V_k - L^T_k`` its overfitting and ``dO_k = O_k(N + n) - O_k(N)``, and
``w_k = G_k / dO_k^2`` normalised to sum to 1. With ``model.gblend_weights=[]`` the trainer
estimates them first (offline G-Blend, ``Trainer._estimate_gblend``): from the initial weights
each head is trained alone (loss weight 1, the others 0) for ``n = model.gblend_window_epochs``
epochs (0: the whole schedule, as BalanceBenchmark's offline variant), its loss measured before
and after on the val split (the held-out set V) and on as many training videos (T); then the
run starts again from the same initial weights, optimiser and random state with the estimate.
The visual head's window runs with every audio->visual lateral dropped (DropPathway's switch),
so it measures the visual pathways alone; the audio pathway never hears the visual one. AVS,
where on, trains in every window, as in the run itself.

OGM-GE under DDP: the scores are summed over every micro-batch and every rank before the ratio is taken, and
the noise is drawn from a generator seeded by (seed, step), so every rank applies the same
change to the same (already averaged) gradient; a resumed run draws what it would have drawn.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from avsf.config import ModelConfig

VISUAL_PREFIXES = ("slow.", "fast.", "fs.")  # the SlowFast encoder of AVSlowFast (Fast->Slow laterals included)
AUDIO_PREFIXES = ("audio.",)


def ogm_coefficients(score_visual: float, score_audio: float, *, alpha: float) -> dict[str, float]:
    """Eq. 10: {"visual": k_v, "audio": k_a, "ratio_visual": rho_v} from the two batch scores."""
    if score_audio <= 0 or score_visual <= 0:  # softmax underflow everywhere: no lead to measure
        return {"visual": 1.0, "audio": 1.0, "ratio_visual": 1.0}
    ratio_v = score_visual / score_audio
    k_v = 1.0 - math.tanh(alpha * ratio_v) if ratio_v > 1 else 1.0
    k_a = 1.0 - math.tanh(alpha / ratio_v) if 1 / ratio_v > 1 else 1.0
    return {"visual": k_v, "audio": k_a, "ratio_visual": ratio_v}


def modality_of(name: str) -> str | None:
    """"visual", "audio" or None (not an encoder parameter) for a parameter name of AVSlowFast."""
    name = name.removeprefix("module.")  # DDP's wrapper
    if name.startswith(VISUAL_PREFIXES):
        return "visual"
    if name.startswith(AUDIO_PREFIXES):
        return "audio"
    return None


def encoder_kernels(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """{"visual": [...], "audio": [...]}: the convolution kernels (4-D and 5-D weights) of each encoder."""
    groups: dict[str, list[nn.Parameter]] = {"visual": [], "audio": []}
    for name, p in model.named_parameters():
        modality = modality_of(name)
        if modality is not None and p.requires_grad and p.dim() >= 4:
            groups[modality].append(p)
    return groups


class OGMGE:
    """The OGM-GE state of one run: scores gathered over a step's micro-batches, then applied."""

    def __init__(self, cfg: ModelConfig, model: nn.Module, *, seed: int) -> None:
        self.alpha, self.start, self.end, self.seed = cfg.ogm_alpha, cfg.ogm_start_epoch, cfg.ogm_end_epoch, seed
        self.groups = encoder_kernels(model)
        if not self.groups["visual"] or not self.groups["audio"]:
            raise ValueError("OGM-GE needs a model with both a visual and an audio encoder")
        self._scores = torch.zeros(4, dtype=torch.float64)  # score_v, score_a, hits_v, hits_a

    def add(self, outputs: dict[str, torch.Tensor], labels: torch.Tensor) -> None:
        """Eq. 9 for one micro-batch: add its clips' softmax scores of the true class (and the hits
        of each modality's own argmax, logged as its train top-1)."""
        labels = labels.to(outputs["ogm_logits/visual"].device).long().view(-1, 1)
        row = []
        for key in ("ogm_logits/visual", "ogm_logits/audio"):
            row.append(outputs[key].softmax(dim=1).gather(1, labels).sum())
        for key in ("ogm_logits/visual", "ogm_logits/audio"):
            row.append((outputs[key].argmax(dim=1) == labels.view(-1)).sum())
        self._scores += torch.stack([r.double() for r in row]).cpu()

    def apply(self, *, epoch: int, step: int, clips: int) -> dict[str, float]:
        """Eq. 10 and 11 and GE on the encoders' gradients (after backward, before the optimiser
        step); `clips`: this step's clips over all ranks. Returns the step's logs."""
        from avsf.engine import distributed as ddp  # noqa: PLC0415

        device = self.groups["visual"][0].device
        totals = ddp.all_reduce_sum(self._scores.to(device, copy=True)).cpu()
        self._scores.zero_()
        score_v, score_a, hits_v, hits_a = (float(x) for x in totals)
        k = ogm_coefficients(score_v, score_a, alpha=self.alpha)
        logs = {"ogm_ratio_visual": k["ratio_visual"], "ogm_coeff_visual": k["visual"], "ogm_coeff_audio": k["audio"],
                "top1_visual_head": 100.0 * hits_v / max(clips, 1), "top1_audio_head": 100.0 * hits_a / max(clips, 1)}
        if not self.start <= epoch <= self.end:
            logs["ogm_coeff_visual"] = logs["ogm_coeff_audio"] = 1.0
            return logs
        g = torch.Generator(device=device).manual_seed(_derive(self.seed, step))
        with torch.no_grad():
            for modality in ("visual", "audio"):
                for p in self.groups[modality]:
                    if p.grad is None:
                        continue
                    std = float(p.grad.float().std()) + 1e-8
                    noise = torch.randn(p.grad.shape, generator=g, device=device, dtype=torch.float32) * std
                    p.grad.mul_(k[modality]).add_(noise.to(p.grad.dtype))
        return logs


def _derive(seed: int, step: int) -> int:
    from avsf.engine.runtime import derive_seed  # noqa: PLC0415

    return derive_seed(seed, "ogm_ge", step)


def gblend_weights(*, train_start: dict[str, float], val_start: dict[str, float], train_end: dict[str, float],
                   val_end: dict[str, float], eps: float = 1e-8) -> dict[str, float]:
    """Gradient-Blending's weights (Wang et al. 2020, Eq. 6-7) from each head's train (L^T) and
    held-out (L^V) losses at the start (epoch N) and the end (N + n) of a window:
    ``w_k = G_k / dO_k^2`` normalised to sum 1, with ``G_k = L^V_k(N) - L^V_k(N+n)`` and
    ``dO_k = (L^V_k - L^T_k)(N+n) - (L^V_k - L^T_k)(N)``. A head whose held-out loss did not
    fall (``G_k <= 0``) generalises nothing and gets 0; ``eps`` bounds ``dO_k^2`` from below."""
    heads = list(val_start)
    raw = {}
    for k in heads:
        gain = val_start[k] - val_end[k]
        overfit = (val_end[k] - train_end[k]) - (val_start[k] - train_start[k])
        raw[k] = gain / max(overfit * overfit, eps) if gain > 0 else 0.0
    total = sum(raw.values())
    if total <= 0:
        raise ValueError(f"no head's held-out loss fell over the window ({val_start} -> {val_end}): "
                         "Gradient-Blending's weights are undefined; take a longer window")
    return {k: v / total for k, v in raw.items()}


GBLEND_HEADS = ("visual", "audio", "fused")  # the order of model.gblend_weights


def gblend_loss(outputs: dict[str, torch.Tensor], batch: dict[str, Any], *, fused: torch.Tensor,
                weights: tuple[float, ...]) -> tuple[torch.Tensor, dict[str, float]]:
    """The blended loss ``w_v L_v + w_a L_a + w_av L_av`` of one step (cross-entropy of each head)
    and the step's logs: each head's loss and the two single-modality heads' train top-1."""
    import torch.nn.functional as F  # noqa: PLC0415

    labels = batch["label"]
    losses = {"visual": F.cross_entropy(outputs["gblend_logits/visual"].float(), labels),
              "audio": F.cross_entropy(outputs["gblend_logits/audio"].float(), labels), "fused": fused}
    w = dict(zip(GBLEND_HEADS, weights))
    total = sum(w[k] * losses[k] for k in GBLEND_HEADS)
    logs = {f"loss_{k}_head": float(losses[k].detach()) for k in GBLEND_HEADS}
    for k in ("visual", "audio"):
        right = (outputs[f"gblend_logits/{k}"].argmax(dim=1) == labels).sum()
        logs[f"top1_{k}_head"] = 100.0 * float(right) / max(labels.numel(), 1)
    return total, logs


def head_loss_sums(outputs: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """[visual, audio, fused, clips]: the summed cross-entropy of each G-Blend head over a batch."""
    import torch.nn.functional as F  # noqa: PLC0415

    sums = [float(F.cross_entropy(outputs[key].float(), labels, reduction="sum"))
            for key in ("gblend_logits/visual", "gblend_logits/audio", "logits")]
    return torch.tensor([*sums, labels.numel()], dtype=torch.float64)


def build_balancer(cfg: ModelConfig, model: nn.Module, *, seed: int) -> Any:
    """The step-time balancer of ``cfg.balance``: None for "none", "droppathway" (in the model's
    forward) and "gblend" (in the task's loss)."""
    return OGMGE(cfg, model, seed=seed) if cfg.balance == "ogm_ge" else None
