"""The experiment registry: grids per scale, shared runs, claims coverage, synthetic views."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from avsf import experiments as E
from avsf.data.synthetic import GENERATOR_VERSION
from avsf.data.synthetic import views as V
from avsf.errors import UserError
from avsf.presets import get_preset

# Every claim of claims.csv has a notebook now (Tables 7 and 8 included).
NOT_BUILT: set[str] = set()


def test_every_notebook_has_an_experiment_and_every_claim_a_home():
    claims = {c["id"] for c in E.load_claims()}
    linked = {cid for name in E.list_experiments() for cid in E.claim_ids(name)}
    assert linked <= claims, linked - claims
    assert claims - linked == NOT_BUILT
    notebooks = {p.stem for p in (Path(__file__).parent.parent / "notebooks").glob("*.ipynb")}
    assert notebooks == set(E.list_experiments())


@pytest.mark.parametrize("name", E.list_experiments())
def test_smoke_grid_is_tiny_presets_on_builtin_data(name):
    grid = E.get_grid(name, scale="smoke", seeds=[0, 1])
    exp = E.get_experiment(name)
    trained_rows = [r for r in exp.rows_at("smoke") if not r.is_ensemble]
    assert len(grid) == 2 * len({E.row_config(exp, r.key, scale="smoke", seed=0).config_hash() for r in trained_rows})
    for cfg in grid:
        assert cfg.name.endswith(("_tiny", "_tiny_ava"))
        assert cfg.model.stage_depths == (1, 1, 1, 1)
        # kinetics, ucf101, hmdb51: table8_ssl's derived views of the built-in data; ava: table7_ava's
        assert cfg.data.dataset in ("synthetic", "epic", "charades", "kinetics", "ucf101", "hmdb51", "ava")
        assert Path(cfg.data.synthetic_root).is_absolute()
        assert cfg.data.synthetic_version == GENERATOR_VERSION  # part of the run's identity


def test_a_run_made_for_another_builtin_dataset_version_is_refused(tmp_path):
    from avsf.data.datasets import dataset_root

    cfg = get_preset("avslowfast_tiny").with_overrides(
        [f"data.synthetic_root={tmp_path}", f"data.synthetic_version={GENERATOR_VERSION + 1}"])
    with pytest.raises(UserError, match=f"version {GENERATOR_VERSION + 1}.*generates version {GENERATOR_VERSION}"):
        dataset_root(cfg)
    assert not any(tmp_path.iterdir())  # refused before generating anything
    older = E.row_config("ablate_droppath", "avslowfast", scale="smoke", seed=0).with_overrides(
        [f"data.synthetic_version={GENERATOR_VERSION - 1}"])
    assert older.config_hash() != E.row_config("ablate_droppath", "avslowfast", scale="smoke", seed=0).config_hash()


def test_shared_runs_hash_the_same_across_notebooks():
    def hashes(name, row):
        return E.row_config(name, row, scale="smoke", seed=0).config_hash()

    default = {hashes(n, "avslowfast") for n in ("table3_kinetics", "ablate_droppath", "ablate_avs",
                                                 "ablate_fusion_stages", "fig3_learning_dynamics",
                                                 "sectionA3_per_class_gain")}
    default |= {hashes("ablate_lateral", "a_fs"), hashes("ablate_audio_capacity", "beta_1_2")}
    assert len(default) == 1
    baseline = {hashes(n, "slowfast") for n in ("table3_kinetics", "ablate_droppath", "ablate_fusion_stages",
                                                "fig3_learning_dynamics", "sectionA3_per_class_gain")}
    assert len(baseline) == 1
    assert hashes("ablate_droppath", "dp_none") == hashes("fig3_learning_dynamics", "dp_none")
    assert default.isdisjoint(baseline)


def test_rows_change_exactly_what_the_paper_ablates():
    base = E.row_config("ablate_droppath", "avslowfast", scale="smoke", seed=3)
    assert base.seed == 3 and base.model.droppathway_rate == get_preset("avslowfast_tiny").model.droppathway_rate
    assert E.row_config("ablate_droppath", "dp_none", scale="smoke", seed=3).model.droppathway_rate == 0.0
    assert E.row_config("ablate_fusion_stages", "pool5", scale="smoke", seed=0).model.av_fusion_stages == ()
    assert E.row_config("ablate_avs", "avs_none", scale="smoke", seed=0).model.avs_stages == ()
    assert E.row_config("ablate_lateral", "av_nonlocal", scale="smoke", seed=0).model.av_lateral == "av_nonlocal"
    assert E.row_config("ablate_audio_capacity", "beta_1_8", scale="smoke", seed=0).model.audio_beta == 0.125
    epic = E.row_config("table2_epic_kitchens", "avslowfast_epic", scale="smoke", seed=0)
    assert (epic.data.dataset, epic.model.head) == ("epic", "epic")
    charades = E.row_config("table4_charades", "slowfast_charades", scale="smoke", seed=0)
    assert (charades.data.dataset, charades.model.head) == ("charades", "sigmoid")


def test_small_and_paper_scales_use_the_paper_presets():
    small = E.row_config("ablate_droppath", "avslowfast", scale="small", seed=0)
    assert small.name == "avslowfast_r50_4x16" and small.data.synthetic_scale == "small"
    assert small.model.num_classes == 0  # filled from the dataset by the trainer
    with pytest.raises(UserError, match=r"data_roots\['kinetics'\]"):
        E.get_grid("ablate_droppath", scale="paper", seeds=[0])


def test_paper_scale_with_data_roots(tmp_path):
    for ds in E.DATASETS:
        (tmp_path / ds).mkdir()
    roots = {ds: str(tmp_path / ds) for ds in E.DATASETS}
    grid = E.get_grid_entries("table3_kinetics", scale="paper", seeds=[0], data_roots=roots)
    by_row = {e.row: e.config for e in grid}
    assert by_row["avslowfast"].name == "avslowfast_r50_4x16"
    assert by_row["avslowfast"].data.root == roots["kinetics"]
    assert by_row["avslowfast_ks"].data.dataset == "kinetics_sounds"
    assert by_row["slowfast_r101"].name == "slowfast_r101_8x8"
    epic = E.row_config("table2_epic_kitchens", "slowfast_epic", scale="paper", seed=0, data_roots=roots)
    assert epic.name == "slowfast_r101_8x8_epic" and epic.data.root == roots["epic"]
    ava = {e.row: e.config for e in E.get_grid_entries("table7_ava", scale="paper", seeds=[0], data_roots=roots)}
    assert ava["avslowfast_r101_ava"].name == "avslowfast_r101_ava" and ava["slowfast_ava"].data.root == roots["ava"]
    assert ava["avslowfast_ava"].model.task == "detect" and ava["avslowfast_ava"].data.dataset == "ava"


def test_bad_inputs_are_named():
    with pytest.raises(UserError, match="choose one of smoke, small, paper"):
        E.get_grid("ablate_droppath", scale="huge", seeds=[0])
    with pytest.raises(UserError, match="known: "):
        E.get_grid("table9", scale="smoke", seeds=[0])
    with pytest.raises(UserError, match="does not exist"):
        E.get_grid("ablate_droppath", scale="smoke", seeds=[0], data_roots={"kinetics": "/no/such/folder"})
    for bad in ([], [0, 0], [-1], "a,b", [None]):
        with pytest.raises(UserError, match="seeds"):
            E.check_seeds(bad)
    assert E.check_seeds("0,2") == [0, 2] and E.check_seeds("[1, 3]") == [1, 3] and E.check_seeds(4) == [4]


def test_synthetic_vocabulary_makes_each_class_one_verb_noun_pair():
    from avsf.data.synthetic import CLASSES

    verbs, nouns, pairs = V.synthetic_vocabulary([c.name for c in CLASSES])
    assert len(set(pairs)) == len(CLASSES)  # an EPIC action is exactly one class
    for cls, (v, n) in zip(CLASSES, pairs):
        assert cls.name == f"{nouns[n]} {verbs[v]}"
    with pytest.raises(UserError):
        V.synthetic_vocabulary(["single"])


def _fake_source(root: Path) -> Path:
    """A two-class, one-clip-per-split dataset folder in the built-in dataset's layout."""
    from avsf.data.synthetic.media import write_media

    clips = []
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label in range(2):
            rel = f"{split}/c{label}/{split}_{label:02d}_0000.mp4"
            frames = rng.integers(0, 255, size=(30, 32, 32, 3), dtype=np.uint8)
            audio = (0.1 * rng.standard_normal((1, 16000))).astype(np.float32)
            write_media(root / rel, frames=frames, fps=30.0, audio=audio, sample_rate=16000)
            clips.append({"path": rel, "label": label, "split": split, "num_frames": 30})
    manifest = {"spec": {"fps": 30.0}, "classes": [{"index": 0, "name": "door closing"},
                                                   {"index": 1, "name": "six shaking"}], "clips": clips}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def test_epic_view_reads_back_through_the_epic_reader(tmp_path):
    from avsf.data.datasets import epic

    source = _fake_source(tmp_path / "src")
    out = tmp_path / "epic"
    out.mkdir()
    V.VIEW_WRITERS["epic"](source, out)
    records, bad = epic.read_csv(out / "EPIC_val_action_labels.csv", root=out)
    assert not bad and len(records) == 2
    rows = list(csv.DictReader((out / "EPIC_val_action_labels.csv").open()))
    assert [(r["verb"], r["noun"]) for r in rows] == [("closing", "door"), ("shaking", "six")]
    assert rows[0]["stop_timestamp"] == "00:00:01.00"
    assert all(Path(epic.video_path(out, "P01", r["video_id"])).exists() for r in rows)


def test_charades_view_reads_back_through_the_charades_reader(tmp_path):
    from avsf.data.datasets import charades

    source = _fake_source(tmp_path / "src")
    out = tmp_path / "charades"
    out.mkdir()
    V.VIEW_WRITERS["charades"](source, out)
    records, bad = charades.read_csv(out / "train.csv", root=out)
    assert not bad and len(records) == 2
    # 1 s at 30 fps -> 24 frames at 24 fps; labels: the verb and (after the 2 verbs) the noun
    assert sorted(len(r.frames) for r in records) == [24, 24]
    assert sorted(r.label for r in records) == [(0, 2), (1, 3)]
    assert all(Path(f).exists() for r in records for f in r.frames)


def test_timestamps_never_pass_the_clip_end():
    assert V._timestamp(2.6399) == "00:00:02.63"
    assert V._timestamp(3725.5) == "01:02:05.50"


@pytest.mark.parametrize("scale", ["smoke", "paper"])
def test_ava_detectors_start_from_their_kinetics_rows_and_the_backbones_match(scale):
    """A.7: the detectors are fine-tuned from Kinetics. Each detector row names its Kinetics row's
    run dir in model.init_from, and that model's backbone has exactly the detector's tensors."""
    from avsf.engine.transfer import backbone_state
    from avsf.models import build_model

    roots = {"ava": "/", "kinetics": "/"} if scale == "paper" else None
    exp = E.get_experiment("table7_ava")
    for row in exp.rows_at(scale):
        if row.dataset != "ava":
            continue
        det = E.row_config(exp, row.key, scale=scale, seed=0, data_roots=roots)
        kin = E.row_config(exp, row.init_row, scale=scale, seed=0, data_roots=roots)
        assert det.model.init_from == f"{kin.name}-{kin.config_hash()}"
        kin.model.num_classes = det.model.num_classes = 7
        with torch.device("meta"):
            a, b = backbone_state(build_model(kin.model).state_dict()), backbone_state(build_model(det.model).state_dict())
        assert {k: tuple(v.shape) for k, v in a.items()} == {k: tuple(v.shape) for k, v in b.items()}, row.key


def test_a_missing_view_a_config_names_is_built_when_the_dataset_resolves(smoke_root, tmp_path):
    # what every door (sweep, notebook, `avsf train`) goes through: no prepare_data first
    from avsf.data.datasets import build_dataset, dataset_root

    synth = tmp_path / "synthetic"
    synth.mkdir()
    (synth / "smoke-seed0").symlink_to(smoke_root)  # the built-in data exists; its view does not
    view = V.synthetic_view_dir(kind="epic", synthetic_root=synth, scale="smoke-seed0")
    cfg = get_preset("avslowfast_tiny").with_overrides(
        {"data.dataset": "epic", "data.root": str(view), "data.synthetic_root": str(synth),
         "data.synthetic_version": GENERATOR_VERSION, "model.head": "epic"})
    assert not view.exists()
    assert dataset_root(cfg) == view and (view / "EPIC_train_action_labels.csv").is_file()
    stamp = (view / "view.json").stat().st_mtime_ns
    ds = build_dataset(cfg, "val")
    assert ds.num_videos == sum(1 for c in json.loads((smoke_root / "manifest.json").read_text())["clips"]
                                if c["split"] == "test")  # the view's val lists the built-in test split
    assert (view / "view.json").stat().st_mtime_ns == stamp  # complete: not written again
    assert sorted(p.name for p in synth.iterdir()) == ["smoke-seed0", "views"]  # no temp folder left
    # a user's folder is never taken for a view, and a view of another generator version is refused
    other = cfg.with_overrides({"data.root": str(tmp_path / "mine")})
    with pytest.raises(UserError, match="does not exist"):
        dataset_root(other)
    with pytest.raises(UserError, match="version"):
        dataset_root(cfg.with_overrides({"data.synthetic_version": GENERATOR_VERSION + 1}))
