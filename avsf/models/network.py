"""The AVSlowFast family: one class builds SlowFast (visual only), AVSlowFast and the Audio
pathway alone from a :class:`~avsf.config.ModelConfig`; :class:`LateFusion` ensembles a
SlowFast and an audio-only model.

Layout (paper section 3, REFERENCE.md's table), widths for ``width`` w (64 in the paper):

stage  Slow (T frames, w)            Fast (alpha*T frames, w/beta_inv)  Audio (Ta x F log-mel, beta_A*w)
stem   1x7x7 /2 + maxpool /2         5x7x7 /2 + maxpool /2              9x1 + 1x9 summed, no pool
res2   bottleneck, temporal k 1      bottleneck, temporal k 3           time-freq block (concat | sum)
res3   bottleneck, k 1, /2           bottleneck, k 3, /2                time-freq block, /2 in T and F
res4   bottleneck, k 3, /2 (+NL)     bottleneck, k 3, /2                2-D bottleneck (3x3), /2
res5   bottleneck, k 3, /2           bottleneck, k 3, /2                2-D bottleneck (3x3), /2
head   global average pool of each pathway, concatenated, dropout, linear

Junctions ("pool1", "res2", "res3", "res4") come after the named stage. At a junction, in order:
AVS features are read (pooled Slow and Fast, before any lateral of this junction, and the
pooled audio); audio->visual laterals (``a_f_s``: added to Fast); Fast->Slow (concatenated);
audio->visual laterals (``a_fs`` and ``av_nonlocal``: added to Slow after the concat).
The audio->visual lateral's inner width is ``width`` (64 in the paper, the authors' fixed
AU_FUSION_CONV_CHANNEL_DIM), so tiny models shrink it too.

AVS (``avs_stages``, training only, when the batch has "audio_neg"): at each AVS stage the
pooled [Slow, Fast] features and the pooled audio features are projected to ``avs_dim``; the
layout of aligned and misaligned audio is documented in :mod:`avsf.models.avs`. As in the
authors' code, a stage's AVS loss counts only while no live audio lateral has fed the visual
pathways at an earlier junction (otherwise the visual features have heard the audio and the
task is trivial); it is multiplied by zero otherwise. Unlike the authors' code, the audio side
is the Audio pathway's own feature, not the A->FS lateral's output, so the res5 junction needs
no lateral convs that exist only for the loss. In a training step without "audio_neg" the AVS
projections are tied into the outputs with a zero, so DDP never sees unused parameters.

Detection (``task="detect"``, AVA, appendix A.7): Slow and Fast res5 keep their input's
spatial size (stride 1) and dilate their 3x3 convs by ``res5_dilation`` (2); the head is
:class:`~avsf.models.heads.DetectionHead`: RoIAlign of every person box (``batch["boxes"]``
[R, 5]: batch index, x1, y1, x2, y2 in input pixels) on the time-averaged res5 features,
spatial max pool, the box's clip's pooled audio features concatenated (pool5 fusion; the audio
pathway is unchanged), dropout, linear -> ``"logits"`` [R, K]. AVS and the laterals act per
clip exactly as in classification.

DropPathway (``droppathway_rate`` P_d, one draw per training iteration): a dropped lateral's
output is multiplied by zero, so every parameter stays in the graph (DDP-safe). Mode
``"laterals"`` (default; the authors' code): only the audio->visual laterals are dropped and the
audio features still reach the head. Mode ``"pathway"`` (the paper's prose): the head's audio
features are zeroed too.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from avsf.config import DEPTHS, ConfigError, ModelConfig
from avsf.errors import UserError
from avsf.models.avs import AVSProjection, margin_contrastive_loss, pair_weights
from avsf.models.blocks import (AudioResStage, AudioStem, VisualResStage, VisualStem, cat_channels, channels_last,
                                convs_to_channels_last, is_channels_last)
from avsf.models.droppathway import draw_droppathway, has_audio_laterals
from avsf.models.fusion import AudioLateral, AudioVisualNonLocal, FastToSlow
from avsf.models.heads import ClassifierHead, DetectionHead, EpicHead

RES_STAGES = ("res2", "res3", "res4", "res5")
SLOW_TEMPORAL_KERNELS = {"stem": 1, "res2": 1, "res3": 1, "res4": 3, "res5": 3}
FAST_TEMPORAL_KERNELS = {"stem": 5, "res2": 3, "res3": 3, "res4": 3, "res5": 3}
STAGE_STRIDES = {"res2": 1, "res3": 2, "res4": 2, "res5": 2}
WIDTH_MULT = {"stem": 1, "res2": 4, "res3": 8, "res4": 16, "res5": 32}  # output channels / width
INNER_MULT = {"res2": 1, "res3": 2, "res4": 4, "res5": 8}  # bottleneck channels / width
JUNCTION_OF = {"stem": "pool1", "res2": "res2", "res3": "res3", "res4": "res4", "res5": "res5"}
AUDIO_LATERAL_KERNEL = 5
# Blocks per stage that use the temporal kernel: those of R50; deeper stages (R101's 23-block
# res4) use kernel 1 in the rest, as PySlowFast's NUM_BLOCK_TEMP_KERNEL does (R101 8x8: ~107
# GFLOPs at 256, the SlowFast paper's 106, instead of 127 with temporal kernels everywhere).
TEMPORAL_BLOCKS = dict(zip(("res2", "res3", "res4", "res5"), DEPTHS[50]))


def stage_depths(cfg: ModelConfig) -> dict[str, int]:
    """Blocks per res stage, from `stage_depths` or the ResNet `depth`."""
    depths = cfg.stage_depths or DEPTHS[cfg.depth]
    return dict(zip(RES_STAGES, depths))


def nonlocal_positions(depth: int) -> tuple[int, ...]:
    """Blocks of Slow res4 followed by a non-local block (the paper's "+NL": res4 only).
    Deep stages (R101, 23 blocks) get one every 7th block (6, 13, 20, as PySlowFast's R101 NL
    configs); shorter ones every other block (1, 3, 5 for R50)."""
    step = 7 if depth >= 14 else 2
    return tuple(range(step - 1, depth, step))


@dataclasses.dataclass(frozen=True)
class Geometry:
    """Channel counts and temporal sizes of every pathway at every stage output."""

    slow: dict[str, int]  # stage -> channels (before any lateral)
    fast: dict[str, int]
    audio: dict[str, int]
    audio_inner: dict[str, int]
    audio_time: dict[str, int]  # stage -> audio frames after that stage
    lateral_dim: int


def geometry(cfg: ModelConfig) -> Geometry:
    w = cfg.width
    fast_w = w // cfg.beta_inv
    audio_w = int(round(w * cfg.audio_beta))
    if w < 1 or (cfg.arch in ("slowfast", "avslowfast", "late_fusion") and fast_w < 1):
        raise ConfigError(f"model.width={w} with beta_inv={cfg.beta_inv} leaves the Fast pathway no channels; "
                          f"use width >= beta_inv")
    if cfg.arch != "slowfast" and audio_w < 1:
        raise ConfigError(f"model.width={w} x audio_beta={cfg.audio_beta} leaves the Audio pathway no channels; "
                          f"raise width or audio_beta")
    stages = ("stem",) + RES_STAGES
    time, t = {}, cfg.audio_frames
    for st in stages:
        t = -(-t // STAGE_STRIDES.get(st, 1))  # stride-2 convs with "same" padding round up
        time[st] = t
    return Geometry(slow={s: w * WIDTH_MULT[s] for s in stages}, fast={s: fast_w * WIDTH_MULT[s] for s in stages},
                    audio={s: audio_w * WIDTH_MULT[s] for s in stages},
                    audio_inner={s: audio_w * INNER_MULT[s] for s in RES_STAGES}, audio_time=time,
                    lateral_dim=w)  # 64 in the paper (AU_FUSION_CONV_CHANNEL_DIM); scales with width


class AVSlowFast(nn.Module):
    """SlowFast, AVSlowFast or the Audio pathway alone (``cfg.arch``), see the module docstring.

    forward(batch, *, drop_audio=None) -> dict, per docs/INTERFACES.md:
      batch["slow"] [N, 3, T, H, W], batch["fast"] [N, 3, alpha*T, H, W] (visual archs),
      batch["audio"] [N, 1, Ta, F], optional batch["audio_neg"] [N, 1, Ta, F] (AVS negatives).
      Returns "logits" [N, K] (or "verb_logits", "noun_logits" for the EPIC head); in training
      with AVS stages and "audio_neg": "avs_loss" and "avs_loss/<stage>".
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.arch not in ("slowfast", "avslowfast", "audio_only"):
            raise ConfigError(f"AVSlowFast builds arch slowfast, avslowfast or audio_only, not {cfg.arch!r} "
                              f"(late_fusion: use build_model)")
        pretrain = cfg.task == "pretrain"  # no classifier, pretext heads
        if cfg.head != "epic" and cfg.num_classes < 1 and not pretrain:
            raise ConfigError(f"model.num_classes={cfg.num_classes}: set it to the dataset's class count "
                              f"(smoke presets leave 0 for the trainer to fill in)")
        self.cfg = cfg
        self.has_visual = cfg.arch in ("slowfast", "avslowfast")
        self.has_audio = cfg.arch in ("avslowfast", "audio_only")
        self.geo = geo = geometry(cfg)
        depths = stage_depths(cfg)
        zero = cfg.zero_init_final_bn

        self.slow = nn.ModuleDict()
        self.fast = nn.ModuleDict()
        self.fs = nn.ModuleDict()
        if self.has_visual:
            fs_stages = set(cfg.fs_fusion_stages)
            self.slow["stem"] = VisualStem(dim_out=geo.slow["stem"], temporal_kernel=SLOW_TEMPORAL_KERNELS["stem"])
            self.fast["stem"] = VisualStem(dim_out=geo.fast["stem"], temporal_kernel=FAST_TEMPORAL_KERNELS["stem"])
            detect = cfg.task == "detect"
            prev = "stem"
            for st in RES_STAGES:
                # the detector's res5: spatial stride 1, dilated 3x3 (appendix A.7)
                stride = 1 if (detect and st == "res5") else STAGE_STRIDES[st]
                dilation = cfg.res5_dilation if (detect and st == "res5") else 1
                slow_in = geo.slow[prev] + (cfg.fusion_channel_ratio * geo.fast[prev] if JUNCTION_OF[prev] in fs_stages else 0)
                nl = nonlocal_positions(depths[st]) if (cfg.nonlocal_res4 and st == "res4") else ()
                self.slow[st] = VisualResStage(
                    depth=depths[st], dim_in=slow_in, dim_inner=cfg.width * INNER_MULT[st], dim_out=geo.slow[st],
                    temporal_kernel=SLOW_TEMPORAL_KERNELS[st], spatial_stride=stride,
                    zero_init_final_bn=zero, nonlocal_after=nl, temporal_blocks=TEMPORAL_BLOCKS[st],
                    dilation=dilation)
                self.fast[st] = VisualResStage(
                    depth=depths[st], dim_in=geo.fast[prev], dim_inner=geo.fast["stem"] * INNER_MULT[st],
                    dim_out=geo.fast[st], temporal_kernel=FAST_TEMPORAL_KERNELS[st], spatial_stride=stride,
                    zero_init_final_bn=zero, temporal_blocks=TEMPORAL_BLOCKS[st], dilation=dilation)
                prev = st
            for st, junction in JUNCTION_OF.items():
                if junction in fs_stages:
                    self.fs[junction] = FastToSlow(dim_fast=geo.fast[st], ratio=cfg.fusion_channel_ratio,
                                                   kernel=cfg.fusion_kernel, alpha=cfg.alpha)

        self.audio = nn.ModuleDict()
        if self.has_audio:
            self.audio["stem"] = AudioStem(dim_out=geo.audio["stem"])
            prev = "stem"
            for i, st in enumerate(RES_STAGES):
                tf = cfg.audio_tf_block if i < 2 else "none"  # time-freq blocks in res2 and res3 only
                self.audio[st] = AudioResStage(depth=depths[st], dim_in=geo.audio[prev], dim_inner=geo.audio_inner[st],
                                               dim_out=geo.audio[st], stride=STAGE_STRIDES[st], tf_block=tf,
                                               zero_init_final_bn=zero)
                prev = st

        self.av = nn.ModuleDict()
        self.avs = nn.ModuleDict()
        if cfg.arch == "avslowfast":
            self._build_audio_visual(cfg, geo)

        head_dim = 0
        if self.has_visual:
            head_dim += geo.slow["res5"] + geo.fast["res5"]
        if self.has_audio and (cfg.arch == "audio_only" or cfg.pool5_fusion):
            head_dim += geo.audio["res5"]
        # --- a pretrain model has pretext heads instead of a classifier
        self.frozen_backbone = False
        self.rot_head: nn.Module | None = None
        if pretrain and "rot" in cfg.pretext and self.has_visual:
            self.rot_head = nn.Linear(geo.slow["res5"] + geo.fast["res5"], 4)  # 0/90/180/270 degrees
        self.head: nn.Module | None
        if pretrain:
            self.head = None
        elif cfg.task == "detect":
            if not self.has_visual:
                raise ConfigError("model.task=detect needs the visual pathways (arch slowfast or avslowfast)")
            self.head = DetectionHead(dim_in=head_dim, num_classes=cfg.num_classes, dropout=cfg.dropout,
                                      resolution=cfg.roi_resolution, spatial_pool=cfg.roi_spatial_pool)
        elif cfg.head == "epic":
            self.head = EpicHead(dim_in=head_dim, num_verbs=cfg.num_verbs, num_nouns=cfg.num_nouns,
                                            dropout=cfg.dropout)
        else:
            self.head = ClassifierHead(dim_in=head_dim, num_classes=cfg.num_classes, dropout=cfg.dropout)
        # Gradient-Blending's (Wang et al., CVPR 2020) visual-only and audio-only heads beside the fused one
        self.gblend_heads = nn.ModuleDict()
        if cfg.balance == "gblend" and not pretrain:
            self.gblend_heads["visual"] = ClassifierHead(dim_in=geo.slow["res5"] + geo.fast["res5"],
                                                         num_classes=cfg.num_classes, dropout=cfg.dropout)
            self.gblend_heads["audio"] = ClassifierHead(dim_in=geo.audio["res5"], num_classes=cfg.num_classes,
                                                        dropout=cfg.dropout)
        self._init_weights()
        convs_to_channels_last(self)  # the activations' layout too (forward); see avsf.models.blocks

    def _build_audio_visual(self, cfg: ModelConfig, geo: Geometry) -> None:
        if not cfg.av_fusion_stages and not cfg.pool5_fusion and not cfg.avs_stages:
            raise ConfigError("arch=avslowfast with no av_fusion_stages, pool5_fusion=false and no avs_stages never "
                              "uses its Audio pathway; use arch=slowfast or enable a fusion")
        stage_of = {j: s for s, j in JUNCTION_OF.items()}
        for junction in cfg.av_fusion_stages:
            st = stage_of[junction]
            ta = geo.audio_time[st]
            slow_dim = geo.slow[st] + (cfg.fusion_channel_ratio * geo.fast[st] if junction in cfg.fs_fusion_stages else 0)
            if cfg.av_lateral == "av_nonlocal":
                self.av[junction] = AudioVisualNonLocal(dim_audio=geo.audio[st], dim_inner=geo.lateral_dim,
                                                        dim_visual=slow_dim, zero_init_final_bn=cfg.zero_init_final_bn)
                continue
            target_t, target_dim = ((cfg.slow_frames, slow_dim) if cfg.av_lateral == "a_fs"
                                    else (cfg.slow_frames * cfg.alpha, geo.fast[st]))
            if ta % target_t:
                raise ConfigError(
                    f"audio lateral at {junction}: the Audio pathway has {ta} frames there, not a multiple of the "
                    f"{target_t} visual frames it feeds; choose model.audio_frames as a multiple of "
                    f"{target_t * (cfg.audio_frames // ta if ta else 1)}")
            self.av[junction] = AudioLateral(dim_audio=geo.audio[st], dim_inner=geo.lateral_dim, dim_visual=target_dim,
                                             kernel=AUDIO_LATERAL_KERNEL, stride=ta // target_t)
        for st in cfg.avs_stages:
            junction_slow = geo.slow[st] + geo.fast[st]
            self.avs[st] = AVSProjection(dim_visual=junction_slow, dim_audio=geo.audio[st], dim=cfg.avs_dim,
                                         scale=cfg.avs_scale)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)

    # --- inputs -------------------------------------------------------------------------
    def expected_inputs(self) -> dict[str, str]:
        """Input key -> expected shape, for error messages."""
        c = self.cfg
        out = {}
        if self.has_visual:
            out["slow"] = f"[N, 3, {c.slow_frames}, H, W]"
            out["fast"] = f"[N, 3, {c.slow_frames * c.alpha}, H, W]"
        if self.has_audio:
            out["audio"] = f"[N, 1, {c.audio_frames}, {c.audio_mel_bins}]"
        if c.task == "detect":
            out["boxes"] = "[R, 5] (batch index, x1, y1, x2, y2 in input pixels)"
        return out

    def _check_inputs(self, batch: dict[str, torch.Tensor]) -> int:
        expected = self.expected_inputs()
        if not isinstance(batch, dict):
            raise UserError(f"the {self.cfg.arch} model takes a dict of tensors with keys "
                            f"{', '.join(f'{k!r} {v}' for k, v in expected.items())}; got {type(batch).__name__}")
        missing = [k for k in expected if k not in batch]
        if missing:
            raise UserError(f"input batch lacks {', '.join(map(repr, missing))}: the {self.cfg.arch} model needs "
                            f"{', '.join(f'{k!r} {v}' for k, v in expected.items())}")
        c = self.cfg
        want = {}
        if self.has_visual:
            want["slow"] = (3, c.slow_frames, None, None)
            want["fast"] = (3, c.slow_frames * c.alpha, None, None)
        if self.has_audio:
            want["audio"] = (1, c.audio_frames, c.audio_mel_bins)
            if "audio_neg" in batch:
                want["audio_neg"] = want["audio"]
                expected["audio_neg"] = expected["audio"]
        n = None
        for key, dims in want.items():
            x = batch[key]
            ok = (isinstance(x, torch.Tensor) and x.dim() == len(dims) + 1
                  and all(d is None or d == s for d, s in zip(dims, x.shape[1:])))
            if ok and n is not None and x.shape[0] != n:
                ok = False
            if not ok:
                got = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                raise UserError(f"input {key!r} has shape {got}; expected {expected[key]} with the same N for every "
                                f"input (the {c.arch} model: {', '.join(f'{k} {v}' for k, v in expected.items())})")
            n = x.shape[0]
        if self.has_visual and batch["slow"].shape[3:] != batch["fast"].shape[3:]:
            raise UserError(f"'slow' {list(batch['slow'].shape)} and 'fast' {list(batch['fast'].shape)} must share "
                            f"H and W")
        if c.task == "detect":
            b = batch["boxes"]
            if not (isinstance(b, torch.Tensor) and b.dim() == 2 and b.shape[1] == 5):
                got = list(b.shape) if isinstance(b, torch.Tensor) else type(b).__name__
                raise UserError(f"input 'boxes' has shape {got}; expected {expected['boxes']}")
            if b.numel() and b.device.type != "meta" and (b[:, 0].min() < 0 or b[:, 0].max() >= n):
                raise UserError(f"input 'boxes': batch indices must lie in [0, {n}) for a batch of {n} clips")
        if self.has_visual and min(batch["slow"].shape[3:]) < 32:
            raise UserError(f"'slow' {list(batch['slow'].shape)}: H and W must be at least 32 (five stride-2 stages)")
        return int(n)

    # --- forward ------------------------------------------------------------------------
    # --- the linear probe
    def freeze_backbone(self) -> None:
        """Everything but the classifier's final linear layer (``head.fc``) is frozen: no
        gradients (so no optimiser state) and, whatever ``train()`` is called with, in eval mode
        (BN running statistics kept, no DropPathway). The head's dropout stays active."""
        if self.head is None or not hasattr(self.head, "fc"):
            raise ConfigError("model.freeze=backbone needs a softmax/sigmoid classifier head (head.fc)")
        for name, p in self.named_parameters():
            p.requires_grad_(name.startswith("head.fc."))
        self.frozen_backbone = True
        self.train(self.training)

    def train(self, mode: bool = True) -> "AVSlowFast":
        super().train(mode)
        if self.frozen_backbone:
            for name, child in self.named_children():
                if name != "head":
                    child.eval()
        return self

    def draw_drop(self, drop_audio: bool | None) -> bool:
        """This iteration's DropPathway decision: `drop_audio` (the trainer's draw), or a draw
        of :func:`~avsf.models.droppathway.draw_droppathway` when None; False in eval, for a
        frozen backbone and for models without laterals to drop."""
        if not self.training or self.frozen_backbone or not has_audio_laterals(self.cfg):
            return False
        return bool(drop_audio) if drop_audio is not None else draw_droppathway(self.cfg)

    def forward(self, batch: dict[str, torch.Tensor], *, drop_audio: bool | None = None) -> dict[str, torch.Tensor]:
        n = self._check_inputs(batch)
        c = self.cfg
        drop = self.draw_drop(drop_audio)
        gate = 0.0 if drop else 1.0
        # a pretrain model also scores AVS in eval (validation of the pretext task)
        use_avs = (self.training or c.task == "pretrain") and len(self.avs) > 0 and "audio_neg" in batch

        s = channels_last(batch["slow"]) if self.has_visual else None
        f = channels_last(batch["fast"]) if self.has_visual else None
        a = None
        if self.has_audio:
            # Batch layout for AVS: rows [0, N) aligned audio, rows [N, 2N) the negatives.
            a = torch.cat([batch["audio"], batch["audio_neg"]]) if use_avs else batch["audio"]

        avs_feats: dict[str, tuple[torch.Tensor, torch.Tensor, bool]] = {}
        audio_reached_visual = False  # has a live audio lateral fed the visual pathways yet?
        for st in ("stem",) + RES_STAGES:
            if self.has_visual:
                s, f = self.slow[st](s), self.fast[st](f)
            if a is not None:
                a = self.audio[st](a)
            junction = JUNCTION_OF[st]
            if st in self.avs and use_avs:
                # AVS is live only while the visual features have not heard this clip's audio.
                visual = torch.cat([_pool(s), _pool(f)], dim=1)
                avs_feats[st] = (visual, _pool(a), not audio_reached_visual)
            lateral = self.av[junction] if junction in self.av else None
            # the aligned audio, rows [0, N) (a slice's backward allocates and copies: skip it without negatives)
            aligned = a if a is None or a.shape[0] == n else a[:n]
            if lateral is not None and c.av_lateral == "a_f_s":
                f = f + gate * lateral(aligned, f)
            if junction in self.fs:
                s = cat_channels([s, self.fs[junction](f)])
            if lateral is not None and c.av_lateral != "a_f_s":
                s = s + gate * lateral(aligned, s)
            if lateral is not None and not drop:
                audio_reached_visual = True

        head_gate = gate if c.droppathway_mode == "pathway" else 1.0
        use_audio_head = self.has_audio and (c.arch == "audio_only" or c.pool5_fusion)
        pooled = []
        if self.has_visual:
            pooled += [_pool(s), _pool(f)]
        if c.task == "detect":
            out = self.head(visual=[s, f], audio=_pool(a)[:n] * head_gate if use_audio_head else None,
                            boxes=batch["boxes"], spatial_scale=s.shape[-1] / batch["slow"].shape[-1])
        else:
            if use_audio_head:
                pooled.append(_pool(a)[:n] * head_gate)  # pooled, then sliced: the gradient keeps its layout
            out = self.head(torch.cat(pooled, dim=1)) if self.head is not None else {}
            if self.training and c.balance == "ogm_ge":
                out.update(unimodal_logits(self.head.fc, visual=pooled[:2], audio=pooled[2]))
            if len(self.gblend_heads):  # [N, K] each, in eval too (each head's own accuracy)
                out["gblend_logits/visual"] = self.gblend_heads["visual"](torch.cat(pooled[:2], dim=1))["logits"]
                out["gblend_logits/audio"] = self.gblend_heads["audio"](pooled[2])["logits"]
        if self.rot_head is not None:  # rotation logits from the visual features
            out["rot_logits"] = self.rot_head(torch.cat(pooled[:2], dim=1))

        if use_avs:
            out.update(self._avs_losses(avs_feats, batch, n))
        elif self.training and len(self.avs) > 0:
            # The AVS projections take no part in this step: tie them in with a zero so DDP
            # (find_unused_parameters=False) still sees a gradient for each of them.
            tie = sum(p.sum() for p in self.avs.parameters()) * 0.0
            for k in out:
                out[k] = out[k] + tie
        if self.head is None and self.training and out:
            # no classifier reads the pooled features (e.g. the audio res5 of a
            # ROT-only AVSlowFast); tie them in with a zero so DDP sees a gradient for every stage
            tie = torch.cat(pooled, dim=1).sum() * 0.0
            out = {k: v + tie for k, v in out.items()}
        return out

    def _avs_losses(self, feats: dict, batch: dict[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
        c = self.cfg
        weight = pair_weights(audio=batch["audio"], audio_neg=batch["audio_neg"], silence_var=c.avs_silence_var)
        losses, total = {}, 0.0
        for st, (visual, audio, live) in feats.items():
            v, a = (t.float() for t in self.avs[st](visual, audio))  # distances in fp32 under bf16 autocast
            loss = margin_contrastive_loss(visual=v, audio_pos=a[:n], audio_neg=a[n:], weight=weight, margin=c.avs_margin)
            loss = loss * (1.0 if live else 0.0)
            losses[f"avs_loss/{st}"] = loss
            total = total + loss
        losses["avs_loss"] = c.avs_weight * total
        return losses


def unimodal_logits(fc: nn.Linear, *, visual: list[torch.Tensor], audio: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each modality's own scores from the fused linear head, as OGM-GE reads them (Peng et al.,
    CVPR 2022, Eq. 9): ``W = [W_v | W_a]`` over the concatenated features, so the fused logits
    are ``W_v phi_v + W_a phi_a + b`` and modality u scores ``W_u phi_u + b / 2``. Features
    [N, D_slow], [N, D_fast] and [N, D_audio] -> {"ogm_logits/visual", "ogm_logits/audio"}: [N, K],
    float32 and detached (OGM-GE reads them; no loss is taken of them)."""
    with torch.no_grad():
        v = torch.cat(visual, dim=1).float()
        w, b = fc.weight.float(), fc.bias.float() / 2
        return {"ogm_logits/visual": v @ w[:, :v.shape[1]].T + b,
                "ogm_logits/audio": audio.float() @ w[:, v.shape[1]:].T + b}


def _pool(x: torch.Tensor) -> torch.Tensor:
    """Global average over every axis after channels: [N, C, ...] -> [N, C]."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _GlobalAverage.apply(x)
    return x.mean(dim=tuple(range(2, x.dim())))


class _GlobalAverage(torch.autograd.Function):
    """``x.mean`` over every axis after channels whose gradient has `x`'s memory format.

    Autograd's mean gives a gradient in the default layout; summed with the channels-last
    gradient from the layers above (an AVS stage's pooled features, the head's), it turned the
    whole backward pass below into the default layout, every layer converting on the fly. The
    values are autograd's: the incoming gradient divided by the count, broadcast."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.shape = x.shape
        ctx.channels_last = is_channels_last(x)
        return x.mean(dim=tuple(range(2, x.dim())))

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        shape = ctx.shape
        count = math.prod(shape[2:])
        spread = grad.reshape(*grad.shape, *([1] * (len(shape) - 2))).expand(shape) / count
        return channels_last(spread) if ctx.channels_last else spread.contiguous()


class LateFusion(nn.Module):
    """An ensemble of separately trained visual and audio models (Table 6, "late fusion").

    Averages the two models' class probabilities (softmax, or sigmoid for the multi-label head).
    Returns "probs" [N, K] and "logits" [N, K] = log(probs) for softmax heads (softmax of these
    logits gives back the average) or logit(probs) for sigmoid heads; EPIC heads get
    "verb_*"/"noun_*" of each.
    """

    def __init__(self, visual_model: nn.Module, audio_model: nn.Module, *, multilabel: bool = False) -> None:
        super().__init__()
        self.visual_model = visual_model
        self.audio_model = audio_model
        self.multilabel = multilabel

    def forward(self, batch: dict[str, torch.Tensor], *, drop_audio: bool | None = None) -> dict[str, torch.Tensor]:
        v, a = self.visual_model(batch), self.audio_model(batch)
        out = {}
        for key in v:
            if not key.endswith("logits"):
                continue
            if self.multilabel:
                probs = (torch.sigmoid(v[key]) + torch.sigmoid(a[key])) / 2
                out[key] = torch.logit(probs, eps=1e-6)
            else:
                probs = (torch.softmax(v[key], dim=1) + torch.softmax(a[key], dim=1)) / 2
                out[key] = probs.clamp_min(1e-12).log()
            out[key.replace("logits", "probs")] = probs
        return out


def build_model(cfg: ModelConfig) -> nn.Module:
    """The model a ModelConfig describes (arch slowfast, avslowfast, audio_only or late_fusion)."""
    if cfg.arch == "late_fusion":
        visual = AVSlowFast(dataclasses.replace(cfg, arch="slowfast"))
        audio = AVSlowFast(dataclasses.replace(cfg, arch="audio_only"))
        return LateFusion(visual, audio, multilabel=cfg.head == "sigmoid")
    return AVSlowFast(cfg)


def describe_stages(cfg: ModelConfig, crop: int) -> list[tuple[str, str, tuple[int, ...]]]:
    """Rows (stage, pathway, output shape without N) of the model at a `crop` x `crop` input,
    from a forward pass on the meta device (no memory, no compute): the paper's Table 1.

    Stages: "input", "pool1" (stem + max pool), "res2".."res5", then ("head", "logits", (K,))
    (EPIC: "verb_logits" and "noun_logits"). Slow shapes are the stage outputs before the
    junction's laterals. A late-fusion config lists its visual and its audio model's rows.
    """
    if cfg.arch == "late_fusion":
        visual = describe_stages(dataclasses.replace(cfg, arch="slowfast"), crop)
        audio = describe_stages(dataclasses.replace(cfg, arch="audio_only"), crop)
        rows = [r for r in visual + audio if r[0] != "head"] + [r for r in visual if r[0] == "head"]
        return sorted(rows, key=_row_order)
    model = _meta_model(cfg)
    rows: list[tuple[str, str, tuple[int, ...]]] = []
    batch = example_inputs(cfg, crop=crop, batch=1, device="meta")
    for key, x in batch.items():
        rows.append(("input", key, tuple(x.shape[1:])))
    hooks = []
    for pathway in ("slow", "fast", "audio"):
        for st, mod in getattr(model, pathway).items():
            name = "pool1" if st == "stem" else st
            hooks.append(mod.register_forward_hook(
                lambda _m, _i, out, name=name, pathway=pathway: rows.append((name, pathway, tuple(out.shape[1:])))))
    with torch.no_grad():
        out = model(batch)
    for h in hooks:
        h.remove()
    rows += [("head", key, tuple(value.shape[1:])) for key, value in out.items()]
    return sorted(rows, key=_row_order)


def _row_order(row: tuple) -> tuple[int, int]:
    stages = ("input", "pool1") + RES_STAGES + ("head",)
    pathways = ("slow", "fast", "audio")
    return stages.index(row[0]), pathways.index(row[1]) if row[1] in pathways else len(pathways)


def _meta_model(cfg: ModelConfig) -> AVSlowFast:
    cfg = dataclasses.replace(cfg, num_classes=cfg.num_classes or 400)
    with torch.device("meta"):
        model = AVSlowFast(cfg)
    return model.eval()


def example_inputs(cfg: ModelConfig, *, crop: int, batch: int, device: str | torch.device = "cpu",
                   with_negatives: bool = False, generator: torch.Generator | None = None,
                   width: int | None = None) -> dict[str, torch.Tensor]:
    """Random inputs of the shapes `cfg` expects (keys only for the pathways it has): frames
    of `crop` x `width` (default square); a detector gets one person box per clip."""
    width = width or crop
    out = {}
    def rand(*shape):
        if str(device) == "meta":
            return torch.empty(*shape, device="meta")
        return torch.randn(*shape, generator=generator).to(device)
    if cfg.arch in ("slowfast", "avslowfast", "late_fusion"):
        out["slow"] = rand(batch, 3, cfg.slow_frames, crop, width)
        out["fast"] = rand(batch, 3, cfg.slow_frames * cfg.alpha, crop, width)
    if cfg.arch in ("avslowfast", "audio_only", "late_fusion"):
        out["audio"] = rand(batch, 1, cfg.audio_frames, cfg.audio_mel_bins)
        if with_negatives:
            out["audio_neg"] = rand(batch, 1, cfg.audio_frames, cfg.audio_mel_bins)
    if getattr(cfg, "task", "classify") == "detect":  # one person box per clip, the middle of the frame
        h, w = out["slow"].shape[-2:]
        box = [w * 0.25, h * 0.125, w * 0.75, h * 0.875]  # x1, y1, x2, y2
        boxes = torch.tensor([[float(i)] + box for i in range(batch)])
        out["boxes"] = torch.empty(batch, 5, device="meta") if str(device) == "meta" else boxes.to(device)
    return out
