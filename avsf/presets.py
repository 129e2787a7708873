"""Named presets: one per model row of the paper, plus the smoke-scale models.

Each preset is a plain function returning a :class:`~avsf.config.RunConfig`; ablations are
overrides of these (``--set model.droppathway_rate=0.5``), not presets of their own.
"""

from __future__ import annotations

from avsf.config import DataConfig, ModelConfig, RunConfig, SolverConfig
from avsf.registry import PRESET_NOTES, get_preset, list_presets, register_preset  # noqa: F401 (the lookups)

ALL_FS = ("pool1", "res2", "res3", "res4")  # standard SlowFast: F->S after every stage
MID_FS = ("res3", "res4")  # the authors' AVSlowFast config


def _run(model: ModelConfig, *, sampling_rate: int, epochs: int = 196, **data_kw) -> RunConfig:
    return RunConfig(model=model, data=DataConfig(sampling_rate=sampling_rate, **data_kw),
                     solver=SolverConfig(epochs=epochs))


def _visual(arch: str, depth: int, t: int, alpha: int, **kw) -> ModelConfig:
    # alpha 8 -> temporal kernel 5, alpha 4 -> 7 (the F->S conv spans alpha-ish frames)
    kernel = 5 if alpha >= 8 else 7
    # audio spans the clip: 4x16 and 8x8 cover 64 frames (~2.1 s at 30 fps) -> 128 log-mel
    # frames; 16x8 covers 128 frames -> 256
    audio_frames = 256 if t == 16 else 128
    return ModelConfig(arch=arch, depth=depth, slow_frames=t, alpha=alpha, fusion_kernel=kernel,
                       audio_frames=audio_frames, **kw)


# --- Kinetics-400 (Table 3, ablations in Tables 5 and 6) ----------------------------------
@register_preset("slowfast_r50_4x16", "SlowFast 4x16 R50, visual only (F->S at pool1..res4)")
def slowfast_r50_4x16() -> RunConfig:
    return _run(_visual("slowfast", 50, 4, 8), sampling_rate=16, epochs=256)


@register_preset("slowfast_r50_8x8", "SlowFast 8x8 R50, visual only")
def slowfast_r50_8x8() -> RunConfig:
    return _run(_visual("slowfast", 50, 8, 4), sampling_rate=8)


@register_preset("slowfast_r101_8x8", "SlowFast 8x8 R101, visual only")
def slowfast_r101_8x8() -> RunConfig:
    return _run(_visual("slowfast", 101, 8, 4), sampling_rate=8)


@register_preset("slowfast_r101_16x8_nl", "SlowFast 16x8 R101 + non-local, visual only")
def slowfast_r101_16x8_nl() -> RunConfig:
    return _run(_visual("slowfast", 101, 16, 4, nonlocal_res4=True), sampling_rate=8)


@register_preset("avslowfast_r50_4x16", "AVSlowFast 4x16 R50: F->S at pool1..res4, A->FS at res3/res4, pool5 concat")
def avslowfast_r50_4x16() -> RunConfig:
    return _run(_visual("avslowfast", 50, 4, 8), sampling_rate=16, epochs=256)


@register_preset("avslowfast_r50_4x16_authors", "AVSlowFast 4x16 R50 as the authors' config: F->S and A->FS at res3/res4 only")
def avslowfast_r50_4x16_authors() -> RunConfig:
    return _run(_visual("avslowfast", 50, 4, 8, fs_fusion_stages=MID_FS), sampling_rate=16, epochs=256)


@register_preset("avslowfast_r50_8x8", "AVSlowFast 8x8 R50: F->S at pool1..res4, A->FS at res3/res4")
def avslowfast_r50_8x8() -> RunConfig:
    return _run(_visual("avslowfast", 50, 8, 4), sampling_rate=8)


@register_preset("avslowfast_r50_8x8_authors", "AVSlowFast 8x8 R50 as the authors' config: F->S and A->FS at res3/res4 only")
def avslowfast_r50_8x8_authors() -> RunConfig:
    return _run(_visual("avslowfast", 50, 8, 4, fs_fusion_stages=MID_FS), sampling_rate=8)


@register_preset("avslowfast_r101_8x8", "AVSlowFast 8x8 R101")
def avslowfast_r101_8x8() -> RunConfig:
    return _run(_visual("avslowfast", 101, 8, 4), sampling_rate=8)


@register_preset("avslowfast_r101_16x8_nl", "AVSlowFast 16x8 R101 + non-local")
def avslowfast_r101_16x8_nl() -> RunConfig:
    return _run(_visual("avslowfast", 101, 16, 4, nonlocal_res4=True), sampling_rate=8)


@register_preset("late_fusion_r50_4x16", "Late fusion (Table 6): SlowFast 4x16 R50 and audio-only R50, trained apart, softmax scores averaged")
def late_fusion_r50_4x16() -> RunConfig:
    return _run(_visual("late_fusion", 50, 4, 8), sampling_rate=16, epochs=256)


@register_preset("audio_only_r50", "Audio pathway alone, R50 (Table A.2)")
def audio_only_r50() -> RunConfig:
    return _run(_visual("audio_only", 50, 4, 8), sampling_rate=16, epochs=256)


@register_preset("audio_only_r101", "Audio pathway alone, R101")
def audio_only_r101() -> RunConfig:
    return _run(_visual("audio_only", 101, 4, 8), sampling_rate=16, epochs=256)


# --- EPIC-Kitchens (Table 2) and Charades (Table 4): fine-tuned from Kinetics ------------
def _finetune(model: ModelConfig, *, dataset: str, lr: float, batch: int, epochs: int,
              steps: tuple[float, ...], dropout: float, sampling_rate: int = 8) -> RunConfig:
    model.dropout = dropout
    solver = SolverConfig(base_lr=lr, reference_batch=batch, batch_size=batch // 8 or 1,
                          schedule="steps", steps=steps, warmup_epochs=0.0, epochs=epochs)
    return RunConfig(model=model, data=DataConfig(dataset=dataset, sampling_rate=sampling_rate,
                                                 num_temporal_views=1, num_spatial_views=1),
                     solver=solver)


@register_preset("slowfast_r101_8x8_epic", "SlowFast 8x8 R101, EPIC-Kitchens verb+noun heads")
def slowfast_r101_8x8_epic() -> RunConfig:
    return _finetune(_visual("slowfast", 101, 8, 4, head="epic"), dataset="epic", lr=0.01,
                     batch=32, epochs=30, steps=(2 / 3, 5 / 6), dropout=0.5)


@register_preset("avslowfast_r101_8x8_epic", "AVSlowFast 8x8 R101, EPIC-Kitchens verb+noun heads")
def avslowfast_r101_8x8_epic() -> RunConfig:
    return _finetune(_visual("avslowfast", 101, 8, 4, head="epic"), dataset="epic", lr=0.01,
                     batch=32, epochs=30, steps=(2 / 3, 5 / 6), dropout=0.5)


@register_preset("slowfast_r101_16x8_nl_charades", "SlowFast 16x8 R101 + NL, Charades (sigmoid, 157 classes)")
def slowfast_r101_16x8_nl_charades() -> RunConfig:
    cfg = _finetune(_visual("slowfast", 101, 16, 4, nonlocal_res4=True, head="sigmoid", num_classes=157),
                    dataset="charades", lr=0.07, batch=8, epochs=40, steps=(0.8,), dropout=0.7)
    cfg.data.num_temporal_views, cfg.data.num_spatial_views = 10, 3
    return cfg


@register_preset("avslowfast_r101_16x8_nl_charades", "AVSlowFast 16x8 R101 + NL, Charades (sigmoid, 157 classes)")
def avslowfast_r101_16x8_nl_charades() -> RunConfig:
    cfg = _finetune(_visual("avslowfast", 101, 16, 4, nonlocal_res4=True, head="sigmoid", num_classes=157),
                    dataset="charades", lr=0.07, batch=8, epochs=40, steps=(0.8,), dropout=0.7)
    cfg.data.num_temporal_views, cfg.data.num_spatial_views = 10, 3
    return cfg


# --- smoke scale: the same classes, tiny, on the built-in dataset ---------------------
def _tiny(arch: str) -> RunConfig:
    """The tiny models and the first smoke recipe (batch 8, 8 epochs, dropout 0.3, flips), which
    the detection and pretraining presets below were tuned on and keep."""
    model = ModelConfig(arch=arch, stage_depths=(1, 1, 1, 1), width=16, num_classes=0,
                        slow_frames=4, alpha=4, beta_inv=4, fusion_kernel=5,
                        audio_frames=64, audio_mel_bins=40, dropout=0.3)
    # 32-pixel crops: the smallest the five stride-2 stages take
    data = DataConfig(sampling_rate=8, train_jitter=(32, 40), train_crop=32, test_short_side=32,
                      test_crop=32, num_temporal_views=2, num_spatial_views=1, num_workers=2)
    solver = SolverConfig(base_lr=0.1, reference_batch=16, batch_size=8, epochs=8,
                          warmup_epochs=0.5, warmup_start_lr=0.01)
    return RunConfig(model=model, data=data, solver=solver, bf16=False)


def _tiny_classify(arch: str) -> RunConfig:
    """The smoke classification recipe, chosen by the criteria of docs/SMOKE_RECIPE.md (fit, AV
    above each modality, Fig. 3's premise) before any ablation ran under it: batch 16 at lr 0.1
    (800 steps over 16 epochs of the 800 training clips: at batch 32 the same clips gave half
    the steps and SlowFast stopped at 33 % test top-1), no dropout and no flips (the models
    underfit; a mirrored digit is another picture), validation every 2nd epoch (validation
    does not change training: every step reseeds the RNGs it draws from)."""
    cfg = _tiny(arch)
    cfg.model.dropout = 0.0
    cfg.data.random_flip = False
    cfg.solver.batch_size, cfg.solver.epochs, cfg.solver.warmup_epochs = 16, 16, 1.0
    cfg.eval_every = 2
    return cfg


@register_preset("slowfast_tiny", "smoke-scale SlowFast (visual only), CPU-sized")
def slowfast_tiny() -> RunConfig:
    return _tiny_classify("slowfast")


@register_preset("avslowfast_tiny", "smoke-scale AVSlowFast, CPU-sized")
def avslowfast_tiny() -> RunConfig:
    return _tiny_classify("avslowfast")


@register_preset("audio_only_tiny", "smoke-scale Audio pathway alone, CPU-sized")
def audio_only_tiny() -> RunConfig:
    return _tiny_classify("audio_only")


# --- self-supervised pretraining (Table 8, A.1; recipe of appendix A.8) ------------------------
# A.8: Kinetics-400, 120k iterations at batch 1024 (64 per machine x 16), lr 1.6, lr / 10 at 80k,
# 100k and 110k, linear warm-up from 0.001 over the first 10k; AVS curriculum: easy negatives for
# the first 60k, then 1/4 hard (>= 0.5 s apart). In epochs of ~240k videos: 120k x 1024 / 240k =
# 512 epochs, warm-up 512 / 12; lr 0.1 at batch 64 == 1.6 at 1024; warm-up start 0.001 at 1024 ==
# 6.25e-5 at 64. The data defaults already give curriculum_switch 0.5 and hard fraction 1/4.
SSL_STEPS = (80 / 120, 100 / 120, 110 / 120)


def _pretrain(cfg: RunConfig, *, pretext: tuple[str, ...], epochs: float, warmup_epochs: float,
              warmup_start_lr: float) -> RunConfig:
    cfg.model.task = "pretrain"
    cfg.model.pretext = pretext
    if "avs" not in pretext:
        cfg.model.avs_stages = ()
    cfg.solver.schedule, cfg.solver.steps, cfg.solver.gamma = "steps", SSL_STEPS, 0.1
    cfg.solver.epochs, cfg.solver.warmup_epochs, cfg.solver.warmup_start_lr = int(epochs), warmup_epochs, warmup_start_lr
    return cfg


@register_preset("avslowfast_r50_4x16_pretrain", "AVSlowFast 4x16 R50, self-supervised pretraining (AVS + ROT), A.8 recipe")
def avslowfast_r50_4x16_pretrain() -> RunConfig:
    return _pretrain(avslowfast_r50_4x16(), pretext=("avs", "rot"), epochs=512, warmup_epochs=512 / 12,
                     warmup_start_lr=0.001 * 64 / 1024)


@register_preset("slowfast_r50_4x16_pretrain", "SlowFast 4x16 R50, self-supervised pretraining (ROT), A.8 recipe")
def slowfast_r50_4x16_pretrain() -> RunConfig:
    return _pretrain(slowfast_r50_4x16(), pretext=("rot",), epochs=512, warmup_epochs=512 / 12,
                     warmup_start_lr=0.001 * 64 / 1024)


# Smoke scale: the tiny models, 4 epochs (the step drops at the same fractions of training), half
# the tiny lr (0.05 at batch 8 made the rotation loss jump), one validation view.
def _tiny_pretrain(arch: str, pretext: tuple[str, ...]) -> RunConfig:
    cfg = _pretrain(_tiny(arch), pretext=pretext, epochs=4, warmup_epochs=0.25, warmup_start_lr=0.005)
    cfg.solver.base_lr = 0.05
    cfg.data.num_temporal_views = 1
    return cfg


@register_preset("avslowfast_pretrain_tiny", "smoke-scale AVSlowFast, self-supervised pretraining (AVS + ROT)")
def avslowfast_pretrain_tiny() -> RunConfig:
    return _tiny_pretrain("avslowfast", ("avs", "rot"))


@register_preset("slowfast_pretrain_tiny", "smoke-scale SlowFast, self-supervised pretraining (ROT)")
def slowfast_pretrain_tiny() -> RunConfig:
    return _tiny_pretrain("slowfast", ("rot",))


# --- AVA action detection (Table 7, appendix A.7): fine-tuned from Kinetics ---------------
def _ava(arch: str, depth: int) -> RunConfig:
    """The detector of appendix A.7: 4x16 (R50) / 8x8 (R101) backbones, res5 stride 1 +
    dilation 2, RoIAlign 7x7 + max pool, sigmoid over the label map's classes (60).
    Recipe (the paper's): lr 0.4 at batch 256, 52k iterations = 52k x 256 / ~211k train
    keyframes ~ 63 epochs. Not in the paper, our choice: steps at 1/2 and 3/4 (PySlowFast's AVA
    configs' 10/20 and 15/20), 2 warm-up epochs. Train crop 224 from short side 256-320,
    test on the short-side-256 frame, 1 view. Start from Kinetics weights with
    ``model.init_from`` (table7_ava does: each detector from its Kinetics row's run)."""
    t, alpha = (4, 8) if depth == 50 else (8, 4)
    model = _visual(arch, depth, t, alpha, head="sigmoid", task="detect", num_classes=60)
    model.dropout = 0.5
    solver = SolverConfig(base_lr=0.4, reference_batch=256, batch_size=16, schedule="steps", steps=(0.5, 0.75),
                          warmup_epochs=2.0, warmup_start_lr=0.04, epochs=63)
    data = DataConfig(dataset="ava", sampling_rate=16 if depth == 50 else 8, test_short_side=256, test_crop=256,
                      num_temporal_views=1, num_spatial_views=1)
    return RunConfig(model=model, data=data, solver=solver)


@register_preset("slowfast_r50_ava", "SlowFast 4x16 R50 detector for AVA (res5 dilated, RoIAlign head), visual only")
def slowfast_r50_ava() -> RunConfig:
    return _ava("slowfast", 50)


@register_preset("avslowfast_r50_ava", "AVSlowFast 4x16 R50 detector for AVA (RoI head + per-clip audio features)")
def avslowfast_r50_ava() -> RunConfig:
    return _ava("avslowfast", 50)


@register_preset("slowfast_r101_ava", "SlowFast 8x8 R101 detector for AVA, visual only")
def slowfast_r101_ava() -> RunConfig:
    return _ava("slowfast", 101)


@register_preset("avslowfast_r101_ava", "AVSlowFast 8x8 R101 detector for AVA")
def avslowfast_r101_ava() -> RunConfig:
    return _ava("avslowfast", 101)


def _tiny_ava(arch: str) -> RunConfig:
    """The tiny models on the built-in synthetic AVA data (avsf.data.synthetic.detection, 64 x 80
    frames): 48-pixel crops (short side 48-56), so res5 (stride 16 in the detector) is 3 x 3;
    test on the whole 48 x 60 frame."""
    cfg = _tiny(arch)
    cfg.model.task, cfg.model.head = "detect", "sigmoid"
    cfg.model.dropout = 0.2
    cfg.data.dataset = "ava"
    cfg.data.train_jitter, cfg.data.train_crop = (48, 56), 48
    cfg.data.test_short_side, cfg.data.test_crop = 48, 48
    cfg.data.num_temporal_views = cfg.data.num_spatial_views = 1
    cfg.data.num_workers = 1  # decoding a keyframe clip is cheap; the notebook runs two runs at once
    # 8 epochs of ~10 steps, peak lr 0.1, 48-pixel crops: ~1-1.5 min per run on the loaded 2-core
    # machine (64-pixel crops took twice as long; at 6 epochs and peak 0.05 the detectors
    # stayed near the class frequencies)
    cfg.solver.epochs, cfg.solver.warmup_epochs, cfg.solver.base_lr = 8, 0.5, 0.2
    return cfg


@register_preset("slowfast_tiny_ava", "smoke-scale SlowFast detector on the synthetic AVA data, CPU-sized")
def slowfast_tiny_ava() -> RunConfig:
    return _tiny_ava("slowfast")


@register_preset("avslowfast_tiny_ava", "smoke-scale AVSlowFast detector on the synthetic AVA data, CPU-sized")
def avslowfast_tiny_ava() -> RunConfig:
    return _tiny_ava("avslowfast")
