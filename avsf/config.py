"""One config of defaults for every run, as plain dataclasses.

A :class:`RunConfig` is all a run needs: it serialises to JSON, hashes stably (the launcher's
cache key) and is overridden from the command line with ``--set section.key=value``.

The named presets (plain functions returning a fresh :class:`RunConfig`) live in
:mod:`avsf.presets`, registered in :mod:`avsf.registry`; ``avsf presets`` lists them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field
from typing import Any

from avsf.portable import hash_form, without_operational

STAGES = ("pool1", "res2", "res3", "res4")  # junctions where laterals can enter the visual pathways
AVS_STAGES = ("res2", "res3", "res4", "res5")  # junctions where AVS projections can sit
ARCHS = ("slowfast", "avslowfast", "audio_only", "late_fusion")
AV_LATERALS = ("a_fs", "a_f_s", "av_nonlocal")
DROPPATHWAY_MODES = ("laterals", "pathway")
# model.balance: how joint training keeps one modality from dominating (issue 16). "droppathway":
# DropPathway at model.droppathway_rate, the paper's method and every run's before the field
# existed; "none": nothing (droppathway_rate must be 0); "ogm_ge": OGM-GE, "gblend": Gradient-Blending
# (both avsf.engine.balance), each on top of DropPathway when droppathway_rate > 0
BALANCE_METHODS = ("none", "droppathway", "ogm_ge", "gblend")
AUDIO_TF_BLOCKS = ("concat", "sum", "none")
HEADS = ("softmax", "sigmoid", "epic")
TASKS = ("classify", "detect", "pretrain")  # detect: the AVA detector of appendix A.7; pretrain: pretext tasks only
PRETEXTS = ("avs", "rot")  # task "pretrain"
FREEZE_MODES = ("none", "backbone")  # transfer
ROI_POOLS = ("max", "avg")
AVA_VERSIONS = ("v2.1", "v2.2")
AVA_BOX_SOURCES = ("gt", "proposals")
DEPTHS = {18: (2, 2, 2, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


class ConfigError(ValueError):
    """A config value or override that cannot be used; the message says what is allowed."""


@dataclass
class ModelConfig:
    """The network. Widths follow the Slow pathway; Fast and Audio are fractions of it."""

    arch: str = "avslowfast"  # one of ARCHS
    depth: int = 50  # ResNet depth: 18, 50 or 101 (block counts in DEPTHS)
    stage_depths: tuple[int, ...] = ()  # explicit blocks per res2..res5; overrides `depth` when set
    width: int = 64  # Slow stem channels (64 in the paper); smoke presets shrink this
    num_classes: int = 400
    # Visual pathways
    slow_frames: int = 4  # T of the Slow pathway
    alpha: int = 8  # Fast frame-rate ratio alpha_F
    beta_inv: int = 8  # Fast channel ratio 1 / beta_F
    fusion_channel_ratio: int = 2  # F->S lateral: C_fast -> ratio * C_fast
    fusion_kernel: int = 5  # temporal kernel of the F->S lateral
    fs_fusion_stages: tuple[str, ...] = ("pool1", "res2", "res3", "res4")
    nonlocal_res4: bool = False  # the paper's "+NL" rows
    # Audio pathway
    audio_beta: float = 0.5  # beta_A: audio channels / Slow channels (1/8, 1/4, 1/2, 1)
    audio_frames: int = 128  # log-mel frames (time)
    audio_mel_bins: int = 80  # log-mel bins (frequency)
    audio_tf_block: str = "concat"  # res2/res3 time-freq factorised block; "none" = 3x3
    av_lateral: str = "a_fs"  # one of AV_LATERALS (Table 5a)
    av_fusion_stages: tuple[str, ...] = ("res3", "res4")  # Table 6; pool5 concat is `pool5_fusion`
    pool5_fusion: bool = True  # concat audio features in the head
    # DropPathway
    droppathway_rate: float = 0.8  # P_d; 0 disables
    droppathway_mode: str = "laterals"  # "laterals" (authors' code) or "pathway" (paper's prose)
    # Modality balancing beyond DropPathway: one of BALANCE_METHODS
    balance: str = "droppathway"
    ogm_alpha: float = 0.1  # OGM-GE's alpha (Eq. 10); the authors recommend 0.1 for VGGSound, 0.8 for CREMA-D
    ogm_start_epoch: int = 0  # OGM-GE modulates in epochs [start, end] (0-based, both ends included) ...
    ogm_end_epoch: int = 50  # ... the authors' defaults
    # Gradient-Blending's loss weights of the visual-only, audio-only and fused heads, in that order;
    # empty: estimated at the start of the run (offline G-Blend, avsf.engine.balance)
    gblend_weights: tuple[float, ...] = ()
    gblend_window_epochs: int = 0  # the estimation's window n (epochs from initialisation); 0 = solver.epochs
    # Hierarchical audiovisual synchronisation
    avs_stages: tuple[str, ...] = ("res3", "res4", "res5")  # empty disables AVS
    avs_dim: int = 64
    avs_margin: float = 0.99
    avs_scale: float = 0.5  # L2-normalised features are multiplied by this
    avs_weight: float = 1.0
    avs_silence_var: float = 0.01  # audio with variance below this takes no part in AVS
    # Head
    head: str = "softmax"  # one of HEADS
    num_verbs: int = 125  # EPIC head
    num_nouns: int = 352
    dropout: float = 0.5
    zero_init_final_bn: bool = True
    # what the network is trained for: one of TASKS. "classify": a label per clip; "detect": actions
    # per person box (AVA); "pretrain": self-supervised pretext tasks only, no labels
    task: str = "classify"
    # --- Pretraining (task "pretrain"; avsf/engine/tasks/pretrain.py) and transfer (any task;
    # avsf/engine/transfer.py): Table 8, A.1, A.2, and Table 7's detectors from Kinetics ---------
    pretext: tuple[str, ...] = ()  # task "pretrain": any of PRETEXTS ("avs": audiovisual sync, "rot": rotation)
    rot_weight: float = 1.0  # weight of the rotation cross-entropy in the pretext loss
    init_from: str = ""  # run dir (its newest valid checkpoint) or checkpoint file; relative = beside this run dir
    freeze: str = "none"  # one of FREEZE_MODES: "none" (train all layers) or "backbone" (linear probe)
    # --- Detection (AVA, appendix A.7; see avsf.models.heads.DetectionHead) ---------------
    res5_dilation: int = 2  # detect: Slow/Fast res5 with spatial stride 1 and this dilation
    roi_resolution: int = 7  # detect: RoIAlign output size (PySlowFast POOLER_RESOLUTION)
    roi_spatial_pool: str = "max"  # detect: pooling of the RoI features, "max" (PySlowFast) or "avg"


@dataclass
class DataConfig:
    """What is decoded and how it is sampled. Sizes are in pixels, frames and mel frames."""

    dataset: str = "synthetic"  # kinetics, kinetics_sounds, charades, epic, ucf101, hmdb51, ava, synthetic
    root: str = ""  # dataset root; empty = the built-in dataset at `synthetic_root`
    synthetic_root: str = "data/synthetic"  # where `avsf synth` writes (generated on first use)
    synthetic_scale: str = "smoke"
    synthetic_seed: int = 0
    # the built-in generator version a run expects (0 = whatever is on disk); the notebooks' grids
    # set the current one, so a run trained on an older built-in dataset is never reused
    synthetic_version: int = 0
    split_dir: str = ""  # folder with the split files; empty = `root`
    target_fps: float = 30.0
    sampling_rate: int = 16  # tau: frames between Slow frames at target_fps
    train_jitter: tuple[int, int] = (256, 320)
    train_crop: int = 224
    test_short_side: int = 256
    test_crop: int = 256
    num_temporal_views: int = 10
    num_spatial_views: int = 3
    mean: tuple[float, float, float] = (0.45, 0.45, 0.45)
    std: tuple[float, float, float] = (0.225, 0.225, 0.225)
    random_flip: bool = True
    # Audio
    audio_sample_rate: int = 16000
    n_fft: int = 512
    hop_length: int = 256
    logmel_mean: float = -7.03
    logmel_std: float = 4.66
    # AVS negatives
    hard_negative_min_shift_s: float = 0.5
    hard_negative_fraction: float = 0.25  # after the curriculum switch
    curriculum_switch: float = 0.5  # fraction of training spent on easy negatives only
    # Loading
    num_workers: int = 2
    decode_failure: str = "replace"  # "replace" (count and log) or "strict" (raise)
    decode_timeout_s: float = 60.0
    # stop a training epoch once more than this fraction of its clip reads failed (at least
    # DATA_GONE_MIN_READS reads in): the data went away (an unmounted share), and replacing
    # most clips would train on a fraction of the dataset without a word. 1 = never stop.
    # Decides only whether a run stops, never what it computes: not in the config hash.
    max_failed_fraction: float = 0.25
    # at most this many videos per split, evenly spaced over the split file (0 = all): a quick
    # look at a new dataset, and CI's one-epoch grids; the subset enters the config hash
    limit_videos: int = 0
    # --- AVA (dataset "ava"; layout in avsf/data/datasets/ava.py) ---------------------------
    ava_version: str = "v2.2"  # which annotation file names to read: v2.1 or v2.2
    ava_annotation_dir: str = ""  # folder of the CSVs and the label map; empty = ROOT/annotations
    ava_time_offset: float = 900.0  # movie second at the video file's t=0 (900: the 15-min cuts)
    ava_proposal_threshold: float = 0.8  # person proposals with a lower score are not used
    ava_train_proposals: bool = False  # train on proposals above the threshold too (besides GT)
    ava_test_boxes: str = "proposals"  # boxes scored at val/test: "proposals" or "gt"


@dataclass
class SolverConfig:
    """Optimiser and schedule. `base_lr` is for `reference_batch`; the run scales it linearly."""

    optimizer: str = "sgd"
    base_lr: float = 0.1
    reference_batch: int = 64  # paper: 1.6 at 1024 == 0.1 at 64
    momentum: float = 0.9
    weight_decay: float = 1e-4
    nesterov: bool = True
    schedule: str = "cosine"  # "cosine" or "steps"
    steps: tuple[float, ...] = ()  # fractions of training where lr drops (schedule "steps")
    gamma: float = 0.1
    warmup_epochs: float = 34.0
    warmup_start_lr: float = 0.01
    epochs: int = 196
    batch_size: int = 8  # per process
    # micro-batches of batch_size per step and process, each split from the epoch's order as one
    # more process would take its share (its own BN statistics and AVS negatives), gradients
    # averaged: k of them in one process compute the step of k DDP processes (avsf.engine.train)
    accumulate: int = 1
    precise_bn: bool = False
    precise_bn_batches: int = 200


@dataclass
class RunConfig:
    """Everything one run needs."""

    name: str = "avslowfast_r50_4x16"
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    device: str = "auto"  # "auto", "cpu" or "cuda"
    bf16: bool = True  # autocast on GPU; CPU always runs exact fp32
    checkpoint_every: int = 0  # steps; 0 = only at each epoch's end
    keep_checkpoints: int = 3
    eval_every: int = 1  # epochs between validation passes
    log_every: int = 10  # steps
    tensorboard: bool = True  # TensorBoard event files in the run directory (rank 0; avsf.engine.events)

    # --- serialisation -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return _to_jsonable(dataclasses.asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        return _from_dict(cls, d, "")

    def config_hash(self, length: int = 12) -> str:
        """Stable hash of the whole config (independent of key order and Python version) in its
        portable form (:func:`avsf.portable.hash_form`): machine paths do not enter it, so two
        clones at different paths give a grid the same run names."""
        blob = json.dumps(without_operational(hash_form(self.to_dict())), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:length]

    def with_overrides(self, overrides: list[str] | dict[str, Any]) -> "RunConfig":
        """A copy with ``section.key=value`` overrides applied (strings are parsed as JSON
        where they parse, else taken as strings)."""
        cfg = RunConfig.from_dict(self.to_dict())
        items = overrides.items() if isinstance(overrides, dict) else [_split_override(o) for o in overrides]
        for key, value in items:
            set_by_path(cfg, key, value)
        validate(cfg)
        return cfg


def _split_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form section.key=value "
                          f"(e.g. model.droppathway_rate=0.5)")
    key, raw = text.split("=", 1)
    return key.strip(), raw


def _to_jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_to_jsonable(v) for v in x]
    return x


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert `value` (parsed JSON or a raw string) to the annotated type `tp`."""
    origin = typing.get_origin(tp)
    if isinstance(value, str) and tp is not str:
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            if origin is tuple:  # allow res3,res4 without brackets
                value = [v for v in value.split(",") if v]
            elif tp is bool and value.lower() in ("true", "false"):
                value = value.lower() == "true"
            else:
                name = getattr(tp, "__name__", str(tp))
                raise ConfigError(f"{where}: cannot read {value!r} as {name}; give a {name} value, "
                                  f"e.g. --set {where}=<{name}> (avsf presets NAME shows the current one)") from None
    if origin is tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        return tuple(_coerce(v, inner, where) for v in value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
            value = json.loads(value)  # a JSON-quoted string ("a b") means the string inside
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _from_dict(cls: type, d: dict[str, Any], prefix: str) -> Any:
    if not isinstance(d, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(d).__name__}")
    types = _field_types(cls)
    unknown = sorted(set(d) - set(types))
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(prefix + k for k in unknown)}; "
                          f"allowed in {prefix or 'the top level'}: {', '.join(sorted(types))}")
    kwargs = {}
    for name, tp in types.items():
        if name not in d:
            continue
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _from_dict(tp, d[name], f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(d[name], tp, prefix + name)
    return cls(**kwargs)


def set_by_path(cfg: Any, key: str, value: Any) -> None:
    """Set ``section.key`` on a config in place, with type checking and a helpful error."""
    parts = key.split(".")
    obj = cfg
    for i, part in enumerate(parts):
        types = _field_types(type(obj))
        if part not in types:
            where = ".".join(parts[:i]) or "the top level"
            raise ConfigError(f"unknown config key {key!r}: {where} has {', '.join(sorted(types))}")
        if i == len(parts) - 1:
            if dataclasses.is_dataclass(types[part]):
                raise ConfigError(f"{key!r} is a section; set one of its keys, e.g. {key}.{next(iter(_field_types(types[part])))}=...")
            setattr(obj, part, _coerce(value, types[part], key))
        else:
            obj = getattr(obj, part)
            if not dataclasses.is_dataclass(obj):
                raise ConfigError(f"{'.'.join(parts[:i + 1])!r} is not a section")


def _check_choice(value: Any, allowed: tuple, key: str) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not allowed; choose one of {', '.join(map(str, allowed))}")


def _check_balance(m: ModelConfig) -> None:
    _check_choice(m.balance, BALANCE_METHODS, "model.balance")
    if m.balance == "none" and m.droppathway_rate > 0:
        raise ConfigError(f"model.balance=none but model.droppathway_rate={m.droppathway_rate}: no balancing means "
                          "no DropPathway either; set model.droppathway_rate=0 too (or model.balance=droppathway)")
    if m.balance not in ("ogm_ge", "gblend"):
        return
    # both read each modality from its own features beside the fused softmax head
    if m.arch != "avslowfast" or not m.pool5_fusion or m.task != "classify" or m.head != "softmax":
        raise ConfigError(f"model.balance={m.balance} scores the audio and the visual features apart beside the fused "
                          "softmax head: it needs model.arch=avslowfast, model.pool5_fusion=true, model.task=classify "
                          f"and model.head=softmax (got {m.arch}, {m.pool5_fusion}, {m.task}, {m.head})")
    if m.balance == "gblend" and m.gblend_weights and (len(m.gblend_weights) != 3 or min(m.gblend_weights) < 0
                                                       or sum(m.gblend_weights) <= 0):
        raise ConfigError(f"model.gblend_weights={list(m.gblend_weights)}: give the three loss weights "
                          "[visual, audio, fused], non-negative and not all 0, or [] to estimate them at the start "
                          "of the run (offline Gradient-Blending, Wang et al. 2020)")
    if m.gblend_window_epochs < 0:
        raise ConfigError(f"model.gblend_window_epochs={m.gblend_window_epochs} must be >= 0 (0 = solver.epochs)")
    if m.balance == "ogm_ge" and m.ogm_alpha <= 0:
        raise ConfigError(f"model.ogm_alpha={m.ogm_alpha} must be positive (the authors use 0.1 to 0.8)")
    if m.balance == "ogm_ge" and not 0 <= m.ogm_start_epoch <= m.ogm_end_epoch:
        raise ConfigError(f"model.ogm_start_epoch={m.ogm_start_epoch}, model.ogm_end_epoch={m.ogm_end_epoch}: "
                          "need 0 <= start <= end")


def validate(cfg: RunConfig) -> RunConfig:
    """Raise ConfigError naming the allowed values for anything out of range."""
    m, d, s = cfg.model, cfg.data, cfg.solver
    _check_choice(m.arch, ARCHS, "model.arch")
    _check_choice(m.av_lateral, AV_LATERALS, "model.av_lateral")
    _check_choice(m.droppathway_mode, DROPPATHWAY_MODES, "model.droppathway_mode")
    _check_choice(m.audio_tf_block, AUDIO_TF_BLOCKS, "model.audio_tf_block")
    _check_choice(m.head, HEADS, "model.head")
    _check_detection(m, d)
    if not m.stage_depths:
        _check_choice(m.depth, tuple(DEPTHS), "model.depth")
    elif len(m.stage_depths) != 4 or min(m.stage_depths) < 1:
        raise ConfigError(f"model.stage_depths={m.stage_depths} must list 4 positive block counts (res2..res5)")
    for st in m.fs_fusion_stages:
        _check_choice(st, STAGES, "model.fs_fusion_stages item")
    for st in m.av_fusion_stages:
        _check_choice(st, STAGES, "model.av_fusion_stages item")
    for st in m.avs_stages:
        _check_choice(st, AVS_STAGES, "model.avs_stages item")
    if not 0.0 <= m.droppathway_rate < 1.0:
        raise ConfigError(f"model.droppathway_rate={m.droppathway_rate} must be in [0, 1)")
    _check_balance(m)
    if m.audio_beta <= 0:
        raise ConfigError(f"model.audio_beta={m.audio_beta} must be positive (the paper uses 1/8 .. 1)")
    _check_choice(s.schedule, ("cosine", "steps"), "solver.schedule")
    _check_choice(d.decode_failure, ("replace", "strict"), "data.decode_failure")
    if not 0.0 < d.max_failed_fraction <= 1.0:
        raise ConfigError(f"data.max_failed_fraction={d.max_failed_fraction} must be in (0, 1] (1 = never stop)")
    _check_choice(cfg.device, ("auto", "cpu", "cuda"), "device")
    if s.batch_size < 1:
        raise ConfigError(f"solver.batch_size={s.batch_size} must be at least 1")
    if s.accumulate < 1:
        raise ConfigError(f"solver.accumulate={s.accumulate} must be at least 1 (micro-batches per step)")
    _check_pretrain_and_transfer(cfg)
    return cfg


def _check_pretrain_and_transfer(cfg: RunConfig) -> None:
    """The pretraining and transfer block of ModelConfig (task, pretext, rot_weight, freeze)."""
    m = cfg.model
    _check_choice(m.task, TASKS, "model.task")
    if m.freeze == "backbone" and cfg.solver.precise_bn:
        raise ConfigError("model.freeze=backbone keeps the backbone's BN statistics; set solver.precise_bn=false")
    _check_choice(m.freeze, FREEZE_MODES, "model.freeze")
    for p in m.pretext:
        _check_choice(p, PRETEXTS, "model.pretext item")
    if len(set(m.pretext)) != len(m.pretext):
        raise ConfigError(f"model.pretext={list(m.pretext)} names a task twice")
    if m.rot_weight < 0:
        raise ConfigError(f"model.rot_weight={m.rot_weight} must be >= 0")
    if m.task != "pretrain":
        if m.pretext:
            raise ConfigError(f"model.pretext={list(m.pretext)} needs model.task=pretrain "
                              f"(a classification or detection run has no pretext tasks; use model.pretext=[])")
        return
    if not m.pretext:
        raise ConfigError("model.task=pretrain needs model.pretext: one or both of avs, rot "
                          "(e.g. model.pretext=avs,rot)")
    if m.arch not in ("slowfast", "avslowfast"):
        raise ConfigError(f"model.task=pretrain is built for arch slowfast or avslowfast, not {m.arch!r}")
    if m.head != "softmax":
        raise ConfigError(f"model.task=pretrain has no classification head; leave model.head=softmax, not {m.head!r}")
    if "avs" in m.pretext:
        if m.arch != "avslowfast":
            raise ConfigError(f"pretext avs needs audio: arch avslowfast, not {m.arch!r} (SlowFast pretrains with rot only)")
        if not m.avs_stages:
            raise ConfigError("pretext avs needs model.avs_stages (e.g. res3,res4,res5): the AVS loss is computed there")
    elif m.avs_stages and m.arch == "avslowfast":
        raise ConfigError(f"model.pretext={list(m.pretext)} without avs but model.avs_stages={list(m.avs_stages)}: "
                          f"set model.avs_stages=[] (or add avs to model.pretext)")
    if m.freeze != "none":
        raise ConfigError("model.freeze=backbone is for transfer (a linear probe); a pretrain run trains "
                          "its backbone: use model.freeze=none")


def _check_detection(m: ModelConfig, d: DataConfig) -> None:
    """The detection (AVA) block of ModelConfig and DataConfig."""
    _check_choice(m.task, TASKS, "model.task")
    _check_choice(m.roi_spatial_pool, ROI_POOLS, "model.roi_spatial_pool")
    _check_choice(d.ava_version, AVA_VERSIONS, "data.ava_version")
    _check_choice(d.ava_test_boxes, AVA_BOX_SOURCES, "data.ava_test_boxes")
    if not 0.0 <= d.ava_proposal_threshold <= 1.0:
        raise ConfigError(f"data.ava_proposal_threshold={d.ava_proposal_threshold} must be in [0, 1]")
    if m.res5_dilation < 1 or m.roi_resolution < 1:
        raise ConfigError(f"model.res5_dilation={m.res5_dilation} and model.roi_resolution={m.roi_resolution} "
                          f"must be at least 1")
    if m.task == "detect":
        if m.arch not in ("slowfast", "avslowfast"):
            raise ConfigError(f"model.task=detect needs a visual model (arch slowfast or avslowfast), not "
                              f"{m.arch!r}: the RoI head pools person boxes from the Slow and Fast features")
        if m.head != "sigmoid":
            raise ConfigError(f"model.task=detect predicts several actions per person: set model.head=sigmoid "
                              f"(got {m.head!r})")
    if d.dataset == "ava" and m.task != "detect":
        raise ConfigError("data.dataset=ava gives person boxes, not clip labels: set model.task=detect "
                          "(e.g. the presets avslowfast_r50_ava, slowfast_tiny_ava)")
