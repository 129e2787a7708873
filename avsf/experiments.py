"""One experiment per paper table or figure: which rows it has, which run config makes each
row at each scale, and which claims of ``claims.csv`` the rows speak to.

A notebook asks :func:`get_grid` for the run configs of its experiment and hands them to
:mod:`avsf.launch`; :mod:`avsf.report` turns the finished runs back into the table.

Scales (the scale changes sizes and schedules, never code paths):

- ``smoke``: the tiny presets (``*_tiny``) on the built-in synthetic dataset, CPU, minutes.
- ``small``: the paper's R50 4x16 model sizes on the synthetic ``small`` dataset with a short
  schedule and small crops; one GPU or a few CPU hours.
- ``paper``: the paper presets and recipe on the real datasets (``data_roots`` required).

Runs that several experiments share (the default AVSlowFast, the SlowFast baseline, the
audio-only model) are built from the same preset with the same overrides, so they hash the
same and the launcher's cache computes them once. Every row keeps its preset's name as the
run name: the run directory ``<name>-<hash>`` is told apart by the hash alone.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from avsf.config import ConfigError, RunConfig
from avsf.errors import UserError
from avsf.presets import get_preset

SCALES = ("smoke", "small", "paper")
DATASETS = ("kinetics", "kinetics_sounds", "epic", "charades", "ucf101", "hmdb51", "kinetics600", "ava")
FAMILIES = ("slowfast", "avslowfast", "audio_only", "slowfast_r101", "avslowfast_r101",
            "slowfast_pretrain", "avslowfast_pretrain",
            "slowfast_ava", "avslowfast_ava", "slowfast_r101_ava", "avslowfast_r101_ava")

# Preset of each model family at each scale. Smoke and small have no R101 rows: those rows
# exist only at the paper scale (their claims read "not run at this scale" below it).
_FAMILY_PRESETS = {
    "smoke": {"slowfast": "slowfast_tiny", "avslowfast": "avslowfast_tiny", "audio_only": "audio_only_tiny",
              "slowfast_ava": "slowfast_tiny_ava", "avslowfast_ava": "avslowfast_tiny_ava"},
    "small": {"slowfast": "slowfast_r50_4x16", "avslowfast": "avslowfast_r50_4x16", "audio_only": "audio_only_r50",
              "slowfast_ava": "slowfast_r50_ava", "avslowfast_ava": "avslowfast_r50_ava"},
    "paper": {"slowfast": "slowfast_r50_4x16", "avslowfast": "avslowfast_r50_4x16", "audio_only": "audio_only_r50",
              "slowfast_r101": "slowfast_r101_8x8", "avslowfast_r101": "avslowfast_r101_8x8",
              "slowfast_ava": "slowfast_r50_ava", "avslowfast_ava": "avslowfast_r50_ava",
              "slowfast_r101_ava": "slowfast_r101_ava", "avslowfast_r101_ava": "avslowfast_r101_ava"},
}
# --- Pretraining presets per scale (A.8 recipe at the paper scale)
_FAMILY_PRESETS["smoke"].update(slowfast_pretrain="slowfast_pretrain_tiny", avslowfast_pretrain="avslowfast_pretrain_tiny")
for _scale in ("small", "paper"):
    _FAMILY_PRESETS[_scale].update(slowfast_pretrain="slowfast_r50_4x16_pretrain",
                                   avslowfast_pretrain="avslowfast_r50_4x16_pretrain")
# The paper fine-tunes its EPIC and Charades models from dedicated presets (Tables 2 and 4).
_PAPER_DATASET_PRESETS = {
    ("epic", "slowfast"): "slowfast_r101_8x8_epic",
    ("epic", "avslowfast"): "avslowfast_r101_8x8_epic",
    ("charades", "slowfast"): "slowfast_r101_16x8_nl_charades",
    ("charades", "avslowfast"): "avslowfast_r101_16x8_nl_charades",
}
# Small scale: the real model size, trained briefly on the synthetic `small` dataset.
SMALL_OVERRIDES = (
    "model.num_classes=0", "data.synthetic_scale=small", "data.train_jitter=[128,160]",
    "data.train_crop=112", "data.test_short_side=128", "data.test_crop=128",
    "data.num_temporal_views=3", "data.num_spatial_views=1", "solver.epochs=30",
    "solver.warmup_epochs=3", "solver.batch_size=16", "solver.reference_batch=16", "bf16=false",
)


@dataclass(frozen=True)
class Row:
    """One row of a table: a model family, the overrides that make this row, the dataset."""

    key: str  # short id, used in runs.csv and plots
    label: str  # as the paper's table names the row
    family: str = "avslowfast"  # one of FAMILIES
    overrides: tuple[str, ...] = ()
    dataset: str = "kinetics"  # one of DATASETS
    scales: tuple[str, ...] = SCALES  # scales at which the row is run
    members: tuple[str, ...] = ()  # late fusion: the rows whose trained models are ensembled
    default: bool = False  # the paper's default setting (marked in tables)
    # transfer rows start from another row's run (None: random init)
    # "" (train as the preset), "probe" (linear probe), "finetune" (train all layers) or "init" (the
    # row's own recipe from another row's weights: the AVA detectors start from Kinetics, as in A.7)
    protocol: str = ""
    init_row: str = ""  # key of the row whose newest checkpoint initialises this row

    @property
    def is_ensemble(self) -> bool:
        return bool(self.members)


@dataclass(frozen=True)
class ClaimLink:
    """How rows of an experiment answer one claim of claims.csv.

    ``rule`` says how ours is computed and judged (see :mod:`avsf.report`):
    ``delta`` (claimed row minus baseline row, against the claimed delta), ``sign`` (only the
    direction is compared: ``lower`` / ``higher``, or a delta whose size belongs to another
    row), ``equivalence`` (a similarity claim: two one-sided tests at ``margin``), ``up_then_down`` (three rows: rises to the
    middle one, then falls), ``ratio`` (compute: claimed / baseline - 1, in %), ``share``
    (compute: audio share of the claimed row), ``overfit_epoch`` (learning curves),
    ``per_class`` (named per-class gains), ``untestable`` (``note`` says why).
    """

    claim_id: str
    rule: str
    rows: tuple[str, ...] = ()
    metric: str = "top1"  # a final.json metric name
    note: str = ""
    label: str = ""  # which comparison, when a claim has several (A4: P_d = 0.5 and 0.8)
    margin: float | None = None  # equivalence claims: the margin (metric units) of the TOST


@dataclass(frozen=True)
class Experiment:
    """A paper table or figure, and the notebook that reproduces it."""

    name: str  # the notebook's name
    title: str
    artifact: str  # e.g. "Table 5c"
    rows: tuple[Row, ...] = ()
    claims: tuple[ClaimLink, ...] = ()
    metrics: tuple[str, ...] = ("top1", "top5")  # columns of the table
    datasets: tuple[str, ...] = ("kinetics",)
    plots: tuple[str, ...] = ("bars",)  # "bars", "curves", "per_class"
    compute: bool = False  # add params / GFLOPs columns
    note: str = ""

    def row(self, key: str) -> Row:
        for r in self.rows:
            if r.key == key:
                return r
        raise UserError(f"{self.name} has no row {key!r}; rows: {', '.join(r.key for r in self.rows)}")

    def rows_at(self, scale: str) -> tuple[Row, ...]:
        return tuple(r for r in self.rows if scale in r.scales)


# --- the rows every experiment shares ----------------------------------------------------
SF = Row("slowfast", "SlowFast (visual only)", family="slowfast")
AVSF = Row("avslowfast", "AVSlowFast (default)", default=True)
AO = Row("audio_only", "Audio pathway only", family="audio_only")
NO_DP = Row("dp_none", "AVSlowFast, no DropPathway (-)", overrides=("model.droppathway_rate=0.0",))

EXPERIMENTS: dict[str, Experiment] = {}


def _register(exp: Experiment) -> Experiment:
    keys = [r.key for r in exp.rows]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{exp.name}: duplicate row keys {keys}")
    for link in exp.claims:
        for k in link.rows:
            exp.row(k)  # raises on a typo
    for r in exp.rows:
        for k in r.members:
            exp.row(k)
        if r.init_row:
            exp.row(r.init_row)
    EXPERIMENTS[exp.name] = exp
    return exp


_register(Experiment(
    name="table1_architecture", title="AVSlowFast instantiation: per-stage shapes, params and GFLOPs",
    artifact="Table 1", plots=(), metrics=(), compute=True,
    note="No training: the model is built at each preset and counted (fvcore convention); "
         "the reference counts are REFERENCE.md's."))

_register(Experiment(
    name="table2_epic_kitchens", title="EPIC-Kitchens: SlowFast vs AVSlowFast (verb / noun / action)",
    artifact="Table 2", datasets=("epic",), metrics=("verb_top1", "noun_top1", "action_top1"),
    rows=(Row("slowfast_epic", "SlowFast", family="slowfast", dataset="epic"),
          Row("avslowfast_epic", "AVSlowFast", dataset="epic", default=True)),
    claims=(ClaimLink("E1", "delta", ("slowfast_epic", "avslowfast_epic"), metric="verb_top1"),
            ClaimLink("E2", "delta", ("slowfast_epic", "avslowfast_epic"), metric="noun_top1"),
            ClaimLink("E3", "delta", ("slowfast_epic", "avslowfast_epic"), metric="action_top1"),
            ClaimLink("E4", "share", ("avslowfast_epic",), metric="gflops"),
            ClaimLink("E5", "untestable", note="needs the EPIC test server and the previous best "
                                              "method's numbers, neither of which is here")),
    compute=True,
    note="Below the paper scale the EPIC data is a derived, synthetic EPIC-format view of the "
         "built-in dataset: each class name '<noun> <verb>' gives a clip's verb and noun "
         "(avsf.data.synthetic.views.synthetic_vocabulary), so an action (verb, noun) is exactly one class: the "
         "numbers say the pipeline works, not what audio does for egocentric video."))

_register(Experiment(
    name="table3_kinetics", title="Kinetics-400 and Kinetics-Sounds: SlowFast vs AVSlowFast",
    artifact="Table 3", datasets=("kinetics", "kinetics_sounds"), compute=True,
    rows=(SF, AVSF,
          Row("slowfast_ks", "SlowFast, Kinetics-Sounds", family="slowfast", dataset="kinetics_sounds",
              scales=("paper",)),
          Row("avslowfast_ks", "AVSlowFast, Kinetics-Sounds", dataset="kinetics_sounds", scales=("paper",)),
          Row("slowfast_r101", "SlowFast R101 8x8", family="slowfast_r101", scales=("paper",)),
          Row("avslowfast_r101", "AVSlowFast R101 8x8", family="avslowfast_r101", scales=("paper",)),
          Row("slowfast_r101_ks", "SlowFast R101, Kinetics-Sounds", family="slowfast_r101",
              dataset="kinetics_sounds", scales=("paper",)),
          Row("avslowfast_r101_ks", "AVSlowFast R101, Kinetics-Sounds", family="avslowfast_r101",
              dataset="kinetics_sounds", scales=("paper",))),
    claims=(ClaimLink("K1", "delta", ("slowfast", "avslowfast")),
            ClaimLink("K2", "delta", ("slowfast_r101", "avslowfast_r101")),
            ClaimLink("K3", "ratio", ("slowfast", "avslowfast"), metric="gflops"),
            ClaimLink("K4", "ratio", ("slowfast", "slowfast_r101"), metric="gflops"),
            ClaimLink("K5", "delta", ("slowfast_ks", "avslowfast_ks")),
            ClaimLink("K6", "delta", ("slowfast_r101_ks", "avslowfast_r101_ks")),
            ClaimLink("P1", "untestable", note="Kinetics-600 and the best prior audio method's "
                                              "number are not here"),
            ClaimLink("P2", "untestable", note="the best prior audio method's number is not in "
                                              "claims.csv; our audio-only row is in fig3")),
    note="The Kinetics-Sounds and R101 rows run only at the paper scale (the synthetic data has "
         "no Kinetics-Sounds subset, and the tiny models have no depth variant). GFLOPs are "
         "per view; the views column gives the test views."))

_register(Experiment(
    name="table4_charades", title="Charades: SlowFast vs AVSlowFast (mAP)",
    artifact="Table 4", datasets=("charades",), metrics=("map",),
    rows=(Row("slowfast_charades", "SlowFast", family="slowfast", dataset="charades"),
          Row("avslowfast_charades", "AVSlowFast", dataset="charades", default=True)),
    claims=(ClaimLink("C1", "delta", ("slowfast_charades", "avslowfast_charades"), metric="map"),),
    note="Below the paper scale the Charades data is a derived, synthetic multi-label view of the "
         "built-in dataset: each video is labelled with the verb and the noun of its class name "
         "'<noun> <verb>' (two positives among the verbs and nouns; avsf.data.synthetic.views.synthetic_vocabulary)."))

_register(Experiment(
    name="ablate_lateral", title="Audiovisual lateral connections", artifact="Table 5a",
    rows=(Row("a_fs", "A->FS (default)", default=True),
          Row("a_f_s", "A->F->S", overrides=("model.av_lateral=a_f_s",)),
          Row("av_nonlocal", "AV Nonlocal", overrides=("model.av_lateral=av_nonlocal",))),
    claims=(ClaimLink("A1", "equivalence", ("a_fs", "av_nonlocal"), margin=0.5,
                      note="'performs similarly': equivalence within ±0.5 top-1 point (the paper calls +0.2 "
                           "similar and reports +0.5, F1, as a gain)"),
            ClaimLink("A2", "sign", ("a_fs", "a_f_s")))))

_register(Experiment(
    name="ablate_audio_capacity", title="Audio pathway capacity (beta_A) and time-frequency filters",
    artifact="Table 5b", compute=True,
    rows=(Row("beta_1_8", "beta_A = 1/8", overrides=("model.audio_beta=0.125",)),
          Row("beta_1_4", "beta_A = 1/4", overrides=("model.audio_beta=0.25",)),
          Row("beta_1_2", "beta_A = 1/2 (default)", default=True),
          Row("beta_1", "beta_A = 1", overrides=("model.audio_beta=1.0",)),
          Row("tf_3x3", "beta_A = 1/2, 3x3 audio filters in res2/res3",
              overrides=("model.audio_tf_block=none",))),
    claims=(ClaimLink("A3", "up_then_down", ("beta_1_8", "beta_1_2", "beta_1")),
            ClaimLink("T1", "delta", ("tf_3x3", "beta_1_2")))))

_register(Experiment(
    name="ablate_droppath", title="DropPathway rate P_d", artifact="Table 5c",
    rows=(SF, NO_DP,
          Row("dp_0.2", "P_d = 0.2", overrides=("model.droppathway_rate=0.2",), scales=("small", "paper")),
          Row("dp_0.5", "P_d = 0.5", overrides=("model.droppathway_rate=0.5",)),
          Row("avslowfast", "P_d = 0.8 (default)", default=True)),
    claims=(ClaimLink("A4", "sign", ("dp_none", "dp_0.5"), label="P_d = 0.5",
                      note="the paper's +1.8 is P_d = 0.8's: for 0.5 the direction is compared"),
            ClaimLink("A4", "delta", ("dp_none", "avslowfast"), label="P_d = 0.8"),
            ClaimLink("A5", "delta", ("slowfast", "dp_none")))))

_register(Experiment(
    name="ablate_avs", title="Hierarchical audiovisual synchronisation (AVS)", artifact="Table 5d",
    rows=(Row("avs_none", "no AVS", overrides=("model.avs_stages=[]",)),
          Row("avs_res5", "AVS at res5", overrides=("model.avs_stages=res5",)),
          Row("avs_res4_5", "AVS at res4, res5", overrides=("model.avs_stages=res4,res5",),
              scales=("small", "paper")),
          Row("avslowfast", "AVS at res3, res4, res5 (default)", default=True)),
    claims=(ClaimLink("A6", "delta", ("avs_none", "avslowfast")),
            ClaimLink("A7", "sign", ("avs_res5", "avslowfast")))))

_register(Experiment(
    name="ablate_fusion_stages", title="Where audio and vision are fused", artifact="Table 6",
    rows=(SF, AO,
          Row("late_fusion", "late fusion: SlowFast + Audio ensemble", family="slowfast",
              members=("slowfast", "audio_only")),
          Row("pool5", "pool5 only (joint training)", overrides=("model.av_fusion_stages=[]",)),
          Row("res4_pool5", "res4 + pool5", overrides=("model.av_fusion_stages=res4",),
              scales=("small", "paper")),
          Row("avslowfast", "res3 + res4 + pool5 (default)", default=True),
          Row("res2_to_pool5", "res2 + res3 + res4 + pool5",
              overrides=("model.av_fusion_stages=res2,res3,res4",))),
    claims=(ClaimLink("F1", "delta", ("slowfast", "late_fusion")),
            ClaimLink("F2", "delta", ("slowfast", "pool5")),
            ClaimLink("F3", "delta", ("pool5", "avslowfast")),
            ClaimLink("F4", "sign", ("avslowfast", "res2_to_pool5")))))

_register(Experiment(
    name="fig3_learning_dynamics", title="Learning dynamics: train and val curves", artifact="Fig. 3",
    rows=(SF, AO, AVSF, NO_DP), plots=("curves", "bars"),
    claims=(ClaimLink("D1", "overfit_epoch", ("slowfast", "audio_only"), metric="val_top1"),)))

_register(Experiment(
    name="sectionA3_per_class_gain", title="Per-class gain of AVSlowFast over SlowFast on Kinetics",
    artifact="Section A.3 (per-class analysis, Kinetics)",
    rows=(SF, AVSF), plots=("per_class",),
    claims=(ClaimLink("P3", "per_class", ("slowfast", "avslowfast")),
            ClaimLink("P4", "per_class", ("slowfast", "avslowfast")))))


# --- Table 8, Table A.1 (linear probe), A.2 (train all layers), audio-only
_PRETRAIN_ROWS = (
    Row("pt_avsf_avs_rot", "pretrain AVSlowFast: AVS + ROT", family="avslowfast_pretrain"),
    Row("pt_avsf_rot", "pretrain AVSlowFast: ROT", family="avslowfast_pretrain",
        overrides=("model.pretext=rot", "model.avs_stages=[]")),
    Row("pt_avsf_avs", "pretrain AVSlowFast: AVS", family="avslowfast_pretrain", overrides=("model.pretext=avs",)),
    Row("pt_sf_rot", "pretrain SlowFast: ROT", family="slowfast_pretrain"),
)
_PROBES = (("pt_avsf_avs_rot", "avslowfast", "AVSlowFast AVS+ROT"), ("pt_avsf_rot", "avslowfast", "AVSlowFast ROT"),
           ("pt_avsf_avs", "avslowfast", "AVSlowFast AVS"), ("pt_sf_rot", "slowfast", "SlowFast ROT"),
           ("", "avslowfast", "AVSlowFast random init"))
_SSL_NAMES = {"ucf101": "UCF101", "hmdb51": "HMDB51"}


def _transfer_rows() -> tuple[Row, ...]:
    rows = []
    for ds, ds_name in _SSL_NAMES.items():
        for init, family, label in _PROBES:
            key = f"probe_{init[3:] if init else 'scratch'}_{ds}"
            rows.append(Row(key, f"{label}, linear probe, {ds_name}", family=family, dataset=ds,
                            protocol="probe", init_row=init, default=init == "pt_avsf_avs_rot"))
        for init, label in (("pt_avsf_avs_rot", "AVSlowFast AVS+ROT"), ("", "AVSlowFast random init")):
            key = f"ft_{init[3:] if init else 'scratch'}_{ds}"
            rows.append(Row(key, f"{label}, train all layers, {ds_name}", dataset=ds, protocol="finetune",
                            init_row=init))
    return tuple(rows)


_SSL_NOTE = ("the claim compares to CBT (Sun et al. 2019), whose number claims.csv does not give and "
             "which we do not run; ours_delta is the SSL probe minus the random-init probe instead")
_register(Experiment(
    name="table8_ssl", title="Self-supervised AVSlowFast: linear probe and fine-tuning on UCF101 / HMDB51; "
                             "audio-only Kinetics",
    artifact="Table 8", datasets=("kinetics", "ucf101", "hmdb51", "kinetics600"), metrics=("top1", "rot_top1", "loss_avs"),
    plots=("ssl_bars",),
    rows=_PRETRAIN_ROWS + _transfer_rows() + (
        AO, Row("audio_only_k600", "Audio pathway only, Kinetics-600", family="audio_only", dataset="kinetics600",
                overrides=("model.num_classes=600",), scales=("paper",))),
    claims=(ClaimLink("S1", "proxy_delta", ("probe_scratch_ucf101", "probe_avsf_avs_rot_ucf101"), note=_SSL_NOTE),
            ClaimLink("S2", "proxy_delta", ("probe_scratch_hmdb51", "probe_avsf_avs_rot_hmdb51"), note=_SSL_NOTE),
            ClaimLink("S3", "proxy_delta", ("probe_scratch_hmdb51", "probe_avsf_avs_rot_hmdb51"),
                      note=_SSL_NOTE + " (Table A.1: the same experiment as S2)"),
            ClaimLink("P1", "value", ("audio_only_k600",),
                      note="no prior audio method's number is here; ours_claimed is our audio-only Kinetics-600 "
                           "top-1 (paper scale only: the built-in data has no Kinetics-600 stand-in)"),
            ClaimLink("P2", "value", ("audio_only",),
                      note="the best prior audio method's Kinetics-400 number is not in claims.csv; ours_claimed "
                           "is our audio-only top-1")),
    note="Sections: Table 8 / Table A.1 = the linear-probe rows (probe_*: backbone frozen, BN in eval, only the "
         "final linear layer trained); A.1's ablation = the AVS / ROT / AVS+ROT and SlowFast-ROT probes; "
         "A.2 = the train-all-layers rows (ft_*); the audio-only row answers P1/P2 (Table A.3, the paper's "
         "audio-only table). Pretrain rows (pt_*) have no top-1: rot_top1 (%) and loss_avs are their pretext metrics on "
         "the val split. Transfer rows start from their pretrain row's newest checkpoint (model.init_from). "
         "Below the paper scale, pretraining reads a subset of the built-in data and UCF101 / HMDB51 are "
         "synthetic views of it in the official split-file formats (20 and 10 classes, 4 train and 2 test "
         "clips per class): the numbers say the pipeline works, not what SSL does for real video."))


_register(Experiment(
    name="table7_ava", title="AVA action detection (frame mAP)",
    artifact="Table 7, Fig. A.1", datasets=("ava",), metrics=("map",), compute=True, plots=("bars", "per_class"),
    rows=(Row("k400_slowfast", "Kinetics SlowFast (initialises the SlowFast detectors)", family="slowfast"),
          Row("k400_avslowfast", "Kinetics AVSlowFast (initialises the AVSlowFast detectors)"),
          Row("k400_slowfast_r101", "Kinetics SlowFast R101 (initialises the R101 detector)",
              family="slowfast_r101", scales=("paper",)),
          Row("k400_avslowfast_r101", "Kinetics AVSlowFast R101 (initialises the R101 detector)",
              family="avslowfast_r101", scales=("paper",)),
          Row("slowfast_ava", "SlowFast detector (visual only)", family="slowfast_ava", dataset="ava",
              protocol="init", init_row="k400_slowfast"),
          Row("avslowfast_ava", "AVSlowFast detector", family="avslowfast_ava", dataset="ava", default=True,
              protocol="init", init_row="k400_avslowfast"),
          Row("slowfast_r101_ava", "SlowFast R101 detector", family="slowfast_r101_ava", dataset="ava",
              scales=("paper",), protocol="init", init_row="k400_slowfast_r101"),
          Row("avslowfast_r101_ava", "AVSlowFast R101 detector", family="avslowfast_r101_ava", dataset="ava",
              scales=("paper",), protocol="init", init_row="k400_avslowfast_r101")),
    claims=(ClaimLink("V1", "delta", ("slowfast_ava", "avslowfast_ava"), metric="map"),
            ClaimLink("V2", "ratio", ("slowfast_ava", "avslowfast_ava"), metric="gflops"),
            ClaimLink("V3", "ratio", ("slowfast_ava", "slowfast_r101_ava"), metric="gflops"),
            ClaimLink("V4", "per_class", ("slowfast_ava", "avslowfast_ava"), metric="map"),
            ClaimLink("V5", "per_class", ("slowfast_ava", "avslowfast_ava"), metric="map")),
    note="Frame-level mAP at IoU 0.5 over the label map's classes (the official AVA evaluation's rule), "
         "per-class AP in final.json (Fig. A.1: figA1_per_class_ap.png). Below the paper scale the data "
         "is the built-in AVA-format detection set (avsf.data.synthetic.detection: several digit actors per "
         "video; two actions look identical and differ only by their sound): its classes are not AVA's, so "
         "V4/V5 cannot be compared. GFLOPs: one view, the detector counted at the paper's 256 x 320 "
         "(the test short side x 1.25) for the compute claims. As in A.7, each detector starts from its "
         "Kinetics model's newest checkpoint (the k400_* rows, shared with the Kinetics notebooks; the "
         "classifier head is re-initialised). The R101 rows run only at the paper scale."))


def list_experiments() -> list[str]:
    return list(EXPERIMENTS)


def get_experiment(name: str) -> Experiment:
    if name not in EXPERIMENTS:
        raise UserError(f"unknown experiment {name!r}; known: {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[name]


def claim_ids(name: str) -> list[str]:
    """The claims.csv ids an experiment speaks to."""
    return [c.claim_id for c in get_experiment(name).claims]


# --- configs ------------------------------------------------------------------------------
def check_scale(scale: str) -> str:
    if scale not in SCALES:
        raise UserError(f"scale={scale!r} is not allowed; choose one of {', '.join(SCALES)}")
    return scale


def project_root() -> Path:
    """The checkout this package runs from (the folder holding pyproject.toml), else the cwd:
    relative paths of the notebooks resolve here whatever folder a kernel starts in."""
    here = Path(__file__).resolve().parent.parent
    return here if (here / "pyproject.toml").exists() else Path.cwd()


def built_in_data_root() -> Path:
    """Where this project generates and keeps the built-in dataset (``<synthetic>`` of a portable
    config)."""
    return project_root() / "data" / "synthetic"


def _preset_for(row: Row, scale: str) -> str:
    if scale == "paper" and (row.dataset, row.family) in _PAPER_DATASET_PRESETS:
        return _PAPER_DATASET_PRESETS[(row.dataset, row.family)]
    presets = _FAMILY_PRESETS[scale]
    if row.family not in presets:
        raise UserError(f"row {row.key!r} ({row.family}) has no model at scale {scale!r}")
    return presets[row.family]


def _data_overrides(row: Row, scale: str, data_roots: dict[str, str | None]) -> list[str]:
    """Where the row's data comes from: the built-in synthetic dataset (or a derived view of it)
    unless the user gave a root for the row's dataset; the paper scale needs real roots."""
    root = data_roots.get(row.dataset)
    if root:
        path = Path(root).expanduser()
        if not path.is_absolute():
            path = project_root() / path
        if not path.exists():
            raise UserError(f"data root for {row.dataset} does not exist: {path} "
                            f"(give an existing folder in data_roots, or None for the built-in data)")
        return [f"data.dataset={row.dataset}", f"data.root={path}"]
    if scale == "paper":
        raise UserError(f"the paper scale needs the real {row.dataset} data: set "
                        f"data_roots['{row.dataset}'] to its folder")
    from avsf.data.synthetic import GENERATOR_VERSION  # noqa: PLC0415 (the data stack is heavy)
    from avsf.data.synthetic.views import synthetic_view_dir  # noqa: PLC0415

    synthetic_root = str(built_in_data_root())
    # the version is part of the run's identity: runs of an older built-in dataset are not reused
    out = [f"data.synthetic_root={synthetic_root}", f"data.synthetic_version={GENERATOR_VERSION}"]
    if row.dataset == "kinetics" and row.family.endswith("_pretrain") and scale == "smoke":
        # smoke pretraining reads a Kinetics-format subset of the built-in data
        view = synthetic_view_dir(kind="ssl_pretrain", synthetic_root=synthetic_root, scale="smoke-seed0")
        return out + ["data.dataset=kinetics", f"data.root={view}"]
    if row.dataset == "kinetics":
        return out + ["data.dataset=synthetic"]
    if row.dataset == "ava":  # the built-in AVA-format detection data (avsf.data.synthetic.detection)
        # one view per keyframe (the small recipe's 3 temporal views are for classification);
        # from scratch, not fine-tuned: the Kinetics lr (0.1 at the reference batch), not AVA's 0.4
        return out + ["data.dataset=ava", "data.root=", "data.num_temporal_views=1", "data.num_spatial_views=1"] + \
            (["solver.base_lr=0.1"] if scale == "small" else [])
    if row.dataset in ("epic", "charades"):
        # written by ensure_synthetic_view() before the runs are submitted
        synth_scale = "small" if scale == "small" else "smoke"
        view = synthetic_view_dir(kind=row.dataset, synthetic_root=synthetic_root, scale=f"{synth_scale}-seed0")
        head = "epic" if row.dataset == "epic" else "sigmoid"
        return out + [f"data.dataset={row.dataset}", f"data.root={view}", f"model.head={head}"]
    if row.dataset in ("ucf101", "hmdb51"):  # official split-file formats
        synth_scale = "small" if scale == "small" else "smoke"
        view = synthetic_view_dir(kind=row.dataset, synthetic_root=synthetic_root, scale=f"{synth_scale}-seed0")
        return out + [f"data.dataset={row.dataset}", f"data.root={view}"]
    raise UserError(f"no synthetic stand-in for {row.dataset} below the paper scale; "
                    f"give data_roots['{row.dataset}']")


def row_config(exp: Experiment | str, row_key: str, *, scale: str, seed: int,
               data_roots: dict[str, str | None] | None = None,
               overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """The RunConfig of one row at one scale and seed (an ensemble row has none: see members).

    ``overrides`` (``section.key=value``) apply to every row after the row's own, e.g.
    ``solver.epochs=2`` for a quick look or ``data.num_workers=8`` on a bigger machine."""
    exp = get_experiment(exp) if isinstance(exp, str) else exp
    check_scale(scale)
    row = exp.row(row_key)
    if row.is_ensemble:
        raise UserError(f"row {row_key!r} is an ensemble of {row.members}: it has no run of its own")
    cfg = get_preset(_preset_for(row, scale))
    extra = list(overrides)
    transfer = _transfer_overrides(exp, row, scale=scale, seed=seed, data_roots=data_roots, overrides=extra)
    overrides = (list(SMALL_OVERRIDES) if scale == "small" else []) + _data_overrides(row, scale, dict(data_roots or {}))
    overrides += transfer + list(row.overrides) + extra + [f"seed={int(seed)}"]
    try:
        return cfg.with_overrides(overrides)
    except ConfigError as e:
        raise UserError(f"{exp.name} row {row_key} at scale {scale}: {e}") from e


# --- Transfer protocols (Table 8 / A.1 linear probe, A.2 train all layers)
# Paper scale (appendix A.8): the linear probe trains 320k iterations at batch 64, lr 0.01, half-period
# cosine; "train all layers" 80k (UCF) / 30k (HMDB) iterations at batch 16, lr 0.005 / 0.01, cosine.
# In epochs of the split-1 training lists (UCF101 9537 videos, HMDB51 3570): probe 320k x 64 / 9537
# = 2147 and / 3570 = 5737 epochs; fine-tuning 80k x 16 / 9537 = 134 and 30k x 16 / 3570 = 134.
_PAPER_TRANSFER = {
    ("probe", "ucf101"): dict(base_lr=0.01, reference_batch=64, batch_size=8, epochs=2147),
    ("probe", "hmdb51"): dict(base_lr=0.01, reference_batch=64, batch_size=8, epochs=5737),
    ("finetune", "ucf101"): dict(base_lr=0.005, reference_batch=16, batch_size=2, epochs=134),
    ("finetune", "hmdb51"): dict(base_lr=0.01, reference_batch=16, batch_size=2, epochs=134),
}
# Smoke / small: a few epochs on the synthetic views, one test view (the views have 3 test clips
# per class); the probe's lr is higher (a linear layer on fixed features).
_SHORT_TRANSFER = {
    "smoke": {"probe": dict(base_lr=0.02, reference_batch=16, epochs=4), "finetune": dict(base_lr=0.05, reference_batch=16, epochs=4)},
    "small": {"probe": dict(base_lr=0.02, reference_batch=16, epochs=20), "finetune": dict(base_lr=0.05, reference_batch=16, epochs=20)},
}


def _transfer_overrides(exp: Experiment, row: Row, *, scale: str, seed: int,
                        data_roots: dict[str, str | None] | None, overrides: list[str]) -> list[str]:
    """The overrides of a transfer row: its protocol's solver and freeze, no AVS (transfer trains
    the classification only), and ``model.init_from`` = the run dir name of its pretrain row
    (same scale, seed and overrides), relative so it resolves in whatever sweep dir both live in."""
    if not row.protocol:
        return []
    if row.protocol not in ("probe", "finetune", "init"):
        raise UserError(f"row {row.key!r}: protocol {row.protocol!r} is not probe, finetune or init")
    if row.protocol == "init":  # the row's own recipe, started from another row's weights (AVA from Kinetics)
        pre = row_config(exp, row.init_row, scale=scale, seed=seed, data_roots=data_roots, overrides=overrides)
        return [f"model.init_from={pre.name}-{pre.config_hash()}"]
    solver = (_PAPER_TRANSFER[(row.protocol, row.dataset)] if scale == "paper"
              else _SHORT_TRANSFER[scale][row.protocol])
    out = [f"model.freeze={'backbone' if row.protocol == 'probe' else 'none'}", "model.avs_stages=[]",
           "solver.schedule=cosine", "solver.steps=[]", "solver.warmup_epochs=0"]
    out += [f"solver.{k}={v}" for k, v in solver.items()]
    if scale != "paper":  # the views' val split is their test list: validating each epoch would test twice
        out += ["data.num_temporal_views=1", "data.num_spatial_views=1", "eval_every=0"]
    if row.init_row:
        pre = row_config(exp, row.init_row, scale=scale, seed=seed, data_roots=data_roots, overrides=overrides)
        out.append(f"model.init_from={pre.name}-{pre.config_hash()}")
    return out


def paper_model_config(exp: Experiment | str, row_key: str) -> RunConfig:
    """A row's config at the paper's model size, without data: what compute claims count."""
    exp = get_experiment(exp) if isinstance(exp, str) else exp
    row = exp.row(row_key)
    return get_preset(_preset_for(row, "paper")).with_overrides(list(row.overrides))


@dataclass
class GridEntry:
    """One run of a grid: which row and seed it makes."""

    experiment: str
    row: str
    seed: int
    config: RunConfig = field(repr=False)


def get_grid_entries(name: str, *, scale: str, seeds: list[int] | tuple[int, ...],
                     data_roots: dict[str, str | None] | None = None,
                     overrides: list[str] | tuple[str, ...] = (),
                     rows: list[str] | tuple[str, ...] | None = None) -> list[GridEntry]:
    """Every (row, seed) run of an experiment at a scale; ensemble rows add no runs.

    ``overrides`` enter every row's config before it is hashed, and the configs that a transfer
    row's ``model.init_from`` names are built with them too. ``rows``: only these row keys (in
    the table's order; :func:`avsf.grid.select_rows` adds what they depend on)."""
    exp = get_experiment(name)
    check_scale(scale)
    seeds = check_seeds(seeds)
    wanted = None if rows is None else set(rows)
    return [GridEntry(exp.name, row.key, seed, row_config(exp, row.key, scale=scale, seed=seed,
                                                          data_roots=data_roots, overrides=overrides))
            for row in exp.rows_at(scale) if not row.is_ensemble and (wanted is None or row.key in wanted)
            for seed in seeds]


def get_grid(name: str, *, scale: str, seeds: list[int] | tuple[int, ...],
             data_roots: dict[str, str | None] | None = None,
             overrides: list[str] | tuple[str, ...] = ()) -> list[RunConfig]:
    """The run configs of an experiment's grid (rows x seeds), duplicates removed."""
    seen: dict[str, RunConfig] = {}
    for entry in get_grid_entries(name, scale=scale, seeds=seeds, data_roots=data_roots, overrides=overrides):
        seen.setdefault(entry.config.config_hash(), entry.config)
    return list(seen.values())


def check_seeds(seeds) -> list[int]:
    """Seeds as a list of distinct non-negative ints (a "0,1" string is accepted)."""
    if isinstance(seeds, str):
        try:
            seeds = json.loads(seeds) if seeds.strip().startswith("[") else [s for s in seeds.split(",") if s.strip()]
        except json.JSONDecodeError:
            raise UserError(f"seeds={seeds!r} is not a list of integers, e.g. [0, 1]") from None
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    try:
        out = [int(s) for s in seeds]
    except (TypeError, ValueError):
        raise UserError(f"seeds={seeds!r} is not a list of integers, e.g. [0, 1]") from None
    if not out or min(out) < 0 or len(set(out)) != len(out):
        raise UserError(f"seeds={seeds!r}: give at least one seed, distinct and non-negative, e.g. [0, 1]")
    return out


def load_claims() -> list[dict[str, str]]:
    """The paper's claims (the project's copy of claims.csv), one dict per row."""
    path = Path(__file__).parent / "resources" / "claims.csv"
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def prepare_data(configs: list[RunConfig]) -> None:
    """Build the derived views and the synthetic AVA data the configs read, before any run starts
    (so parallel runs never race to build them): :func:`avsf.data.synthetic.views.prepare_views`."""
    from avsf.data.synthetic.views import prepare_views  # noqa: PLC0415 (the data stack is heavy)

    prepare_views(configs)
