"""Dataset formats, each on a tiny fixture in its real format, and the sample contract."""

from __future__ import annotations

import json

import pytest
import torch
from media_helpers import tiny_cfg, write_clip, write_kinetics

from avsf.data import build_dataset
from avsf.data.datasets.kinetics import KINETICS_SOUNDS_CLASSES
from avsf.data.loader import collate
from avsf.errors import UserError


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AVSF_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def kinetics(tmp_path_factory):
    root = tmp_path_factory.mktemp("kinetics")
    write_kinetics(root, classes=["abseiling", "bowling", "juggling"], per_class=2, seconds=3.0, silent=(5,),
                   names_in_csv=True,
                   extra_lines=("just_one_field", "a/b.mp4 not_a_class", "gone/missing.mp4 1"))
    return root


def test_kinetics_train_sample_contract(kinetics):
    ds = build_dataset(tiny_cfg(kinetics), "train")
    assert ds.num_classes == 3 and ds.class_names == ["abseiling", "bowling", "juggling"]
    # 7 parsed lines (one file missing), 2 lines that do not parse, 6 usable videos, 5 with sound
    assert ds.stats["listed"] == 7 and ds.stats["found"] == 6 and ds.stats["readable"] == 6
    assert ds.stats["with_audio"] == 5 and ds.stats["bad_lines"] == 2
    assert len(ds) == ds.num_videos == 6
    s = ds[0]
    crop = tiny_cfg(kinetics).data.train_crop
    assert s["slow"].shape == (3, 4, crop, crop) and s["fast"].shape == (3, 16, crop, crop)
    assert torch.equal(s["slow"], s["fast"][:, ::4])
    assert s["audio"].shape == (1, 64, 40) and s["audio_neg"].shape == (1, 64, 40)
    assert s["label"].dtype == torch.int64 and int(s["label"]) == 0
    assert int(s["video_index"]) == 0 and int(s["view_index"]) == 0 and s["has_audio"] is True
    silent = ds[5]
    assert silent["has_audio"] is False and silent["audio"].abs().max() == 0 and float(silent["audio_pad"]) == 1.0
    # the same item in the same epoch is the same sample; another epoch draws another clip
    ds.set_epoch(0, 12)
    first = ds[1]["fast"]
    assert torch.equal(first, ds[1]["fast"])
    ds.set_epoch(1, 12)
    assert not torch.equal(first, ds[1]["fast"])


def test_kinetics_test_views_and_ids(kinetics):
    cfg = tiny_cfg(kinetics, overrides=["data.num_temporal_views=3", "data.num_spatial_views=3"])
    ds = build_dataset(cfg, "test")
    assert len(ds) == 6 * 9
    ids = [(int(ds[i]["video_index"]), int(ds[i]["view_index"])) for i in range(9, 18)]
    assert ids == [(1, v) for v in range(9)]
    s = ds[9]
    crop = cfg.data.test_crop
    assert s["slow"].shape == (3, 4, crop, crop) and "audio_neg" not in s
    # temporal views move the audio with them: first and last views hear different sound
    first, last = ds[9]["audio"], ds[9 + 6]["audio"]
    assert not torch.allclose(first, last)


def test_limit_videos_keeps_an_evenly_spread_subset_of_every_split(kinetics):
    from avsf.data.datasets.base import evenly_spaced

    assert evenly_spaced(list(range(10)), 4) == [0, 2, 5, 7] and evenly_spaced([1, 2], 5) == [1, 2]
    full = build_dataset(tiny_cfg(kinetics), "test")
    cfg = tiny_cfg(kinetics, overrides=["data.limit_videos=3", "data.num_temporal_views=2"])
    part = build_dataset(cfg, "test")
    # the first of each class's two videos (the split lists classes in order): every class stays
    assert [r.path for r in part.records] == [full.records[i].path for i in (0, 2, 4)]
    assert len(part) == 3 * 2 and part.num_classes == full.num_classes
    assert cfg.config_hash() != tiny_cfg(kinetics).config_hash()  # a subset run is another run
    with pytest.raises(UserError, match="limit_videos=-1"):
        build_dataset(tiny_cfg(kinetics, overrides=["data.limit_videos=-1"]), "test")


def test_arch_decides_which_streams_are_decoded(kinetics):
    sf = build_dataset(tiny_cfg(kinetics, preset="slowfast_tiny"), "train")[0]
    assert "slow" in sf and "audio" not in sf and "audio_neg" not in sf
    ao = build_dataset(tiny_cfg(kinetics, preset="audio_only_tiny"), "train")[0]
    assert "audio" in ao and "slow" not in ao and "fast" not in ao


def test_avs_negatives_follow_the_curriculum(tmp_path):
    root = write_kinetics(tmp_path / "k", classes=["a", "b"], per_class=2, seconds=3.0)
    cfg = tiny_cfg(root, overrides=["data.hard_negative_fraction=1.0"])
    ds = build_dataset(cfg, "train")
    ds.set_epoch(0, 10)  # first half: only easy negatives, from other videos of the batch
    batch = collate([ds[i] for i in range(4)])
    assert not batch["audio_neg_hard"].any()
    for i in range(4):
        others = [j for j in range(4) if int(batch["video_index"][j]) != int(batch["video_index"][i])]
        assert any(torch.equal(batch["audio_neg"][i], batch["audio"][j]) for j in others)
    ds.set_epoch(6, 10)  # second half: hard negatives (fraction 1 here), same video shifted
    samples = [ds[i] for i in range(4)]
    assert all(s["audio_neg_hard"] for s in samples)
    assert all(not torch.allclose(s["audio_neg"], s["audio"]) for s in samples)


def test_missing_dataset_says_where_it_looked(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        build_dataset(tiny_cfg(tmp_path / "nowhere"), "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"looked for .*empty/train.csv"):
        build_dataset(tiny_cfg(tmp_path / "empty"), "train")
    (tmp_path / "empty" / "train.csv").write_text("gone.mp4 0\n")
    with pytest.raises(UserError, match=r"none of the 1 videos .*\(0 found.*check-data"):
        build_dataset(tiny_cfg(tmp_path / "empty"), "train")


def test_kinetics_sounds_selects_the_papers_classes_by_name(tmp_path):
    root = write_kinetics(tmp_path / "ks", classes=["writing", "playing drums", "bowling"], per_class=1)
    ds = build_dataset(tiny_cfg(root, dataset="kinetics_sounds"), "train")
    assert len(KINETICS_SOUNDS_CLASSES) == 32 and ds.num_classes == 32
    labels = sorted(int(ds[i]["label"]) for i in range(len(ds)))
    assert labels == sorted([KINETICS_SOUNDS_CLASSES.index("playing drums"), KINETICS_SOUNDS_CLASSES.index("bowling")])


def test_charades_frame_lists_multi_label(tmp_path):
    from PIL import Image

    root = tmp_path / "charades"
    lines = ["original_vido_id video_id frame_id path labels"]
    for v, vid in enumerate(["AAAA1", "BBBB2"]):
        (root / "frames" / vid).mkdir(parents=True)
        for f in range(48):  # 2 s at 24 fps; labels 3 in the first second, 7 in the second
            rel = f"frames/{vid}/{vid}-{f + 1:06d}.jpg"
            Image.new("RGB", (48, 32), (20 + 4 * f,) * 3).save(root / rel, quality=95)
            lines.append(f"{vid} {v} {f} {rel} \"{3 if f < 24 else 7}\"")
    lines.append("CCCC3 2 0 frames/x.jpg \"999\"")  # class out of range: reported, skipped
    for split in ("train", "val"):
        (root / f"{split}.csv").write_text("\n".join(lines) + "\n")
    write_clip(root / "videos" / "AAAA1.mp4", seconds=2.0, noise=0.2, burst_at=None)
    cfg = tiny_cfg(root, dataset="charades")
    train = build_dataset(cfg, "train")
    assert train.num_classes == 157 and train.multi_label and len(train) == 2 and len(train.bad_lines) == 1
    s = train[0]
    assert s["label"].dtype == torch.float32 and s["label"].shape == (157,)
    on = set(torch.nonzero(s["label"]).flatten().tolist())
    assert on and on <= {3, 7}
    assert s["has_audio"] is True and train[1]["has_audio"] is False
    # the frames come from the images: brightness rises with the frame number
    means = s["fast"].float().mean(dim=(0, 2, 3))
    assert torch.all(means[1:] >= means[:-1] - 1e-3)
    test = build_dataset(cfg, "test")
    assert set(torch.nonzero(test[0]["label"]).flatten().tolist()) == {3, 7}  # video-level labels


def test_epic_segments_verb_noun(tmp_path):
    root = tmp_path / "epic"
    write_clip(root / "P01" / "P01_01.MP4", seconds=4.0, noise=0.2, burst_at=None)
    header = ("uid,participant_id,video_id,narration,start_timestamp,stop_timestamp,start_frame,stop_frame,"
              "verb,verb_class,noun,noun_class,all_nouns,all_noun_classes")
    rows = [header,
            '0,P01,P01_01,open tap,00:00:00.50,00:00:02.00,25,100,open,3,tap,8,"[\'tap\']",[8]',
            '1,P01,P01_01,wash cup,00:00:02.10,00:00:03.90,105,195,wash,2,cup,13,"[\'cup\']",[13]',
            '2,P01,P01_01,broken,00:00:03.00,00:00:01.00,1,1,x,1,y,1,[],[]']
    for name in ("EPIC_train_action_labels.csv", "EPIC_val_action_labels.csv"):
        (root / name).write_text("\n".join(rows) + "\n")
    ds = build_dataset(tiny_cfg(root, dataset="epic"), "train")
    assert len(ds) == 2 and len(ds.bad_lines) == 1
    assert (ds.num_verbs, ds.num_nouns) == (125, 352)  # EPIC-55's class counts
    (root / "vocabulary.json").write_text(json.dumps({"verbs": list("abcd"), "nouns": list("abcdefghijklmn")}))
    assert build_dataset(tiny_cfg(root, dataset="epic"), "val").num_verbs == 4  # a derived, smaller view
    s = ds[1]
    assert int(s["verb"]) == 2 and int(s["noun"]) == 13
    for i, (lo, hi) in enumerate([(0.5, 2.0), (2.1, 3.9)]):
        start = ds.clip_plan(i)[1]
        assert lo <= start <= hi - ds.geometry.span_s + 1e-9


def _ucf_fixture(root):
    classes = ["ApplyEyeMakeup", "Biking"]
    (root / "classInd.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(classes)))
    train, test = [], []
    for i, c in enumerate(classes):
        for g in (1, 2):
            rel = f"{c}/v_{c}_g0{g}_c01.avi"
            write_clip(root / rel, seconds=1.5, video_codec="mjpeg", audio_codec="pcm_s16le", noise=0.1, burst_at=None)
            (train if g == 1 else test).append(rel)
    (root / "trainlist01.txt").write_text("".join(f"{r} {classes.index(r.split('/')[0]) + 1}\n" for r in train) +
                                          "Biking/v_x.avi 1\n")  # wrong label: reported
    (root / "testlist01.txt").write_text("".join(f"{r}\n" for r in test))
    return classes


def test_ucf101_official_splits(tmp_path):
    classes = _ucf_fixture(tmp_path / "ucf")
    cfg = tiny_cfg(tmp_path / "ucf", dataset="ucf101")
    train = build_dataset(cfg, "train")
    assert train.class_names == classes and len(train) == 2 and len(train.bad_lines) == 1
    assert sorted(int(train[i]["label"]) for i in range(2)) == [0, 1]
    assert build_dataset(cfg, "test").num_videos == 2


def test_hmdb51_official_splits(tmp_path):
    root = tmp_path / "hmdb"
    for c in ("brush_hair", "cartwheel"):
        lines = []
        for j, use in enumerate((1, 2, 0)):
            name = f"{c}_{j}.avi"
            write_clip(root / c / name, seconds=1.5, video_codec="mjpeg", audio=False)
            lines.append(f"{name} {use}")
        (root / f"{c}_test_split1.txt").write_text("\n".join(lines) + "\n")
    cfg = tiny_cfg(root, dataset="hmdb51")
    train, test = build_dataset(cfg, "train"), build_dataset(cfg, "test")
    assert train.class_names == ["brush_hair", "cartwheel"] and len(train) == 2 and test.num_videos == 2
    assert train.stats["with_audio"] == 0 and train[0]["audio"].abs().max() == 0


def test_unknown_dataset_lists_the_allowed_ones(tmp_path):
    from avsf.config import ConfigError

    with pytest.raises(ConfigError, match="kinetics"):
        build_dataset(tiny_cfg(tmp_path, dataset="youtube8m"), "train")
    (tmp_path / "classnames.json").write_text(json.dumps(["not", "a", "dict"]))
    (tmp_path / "train.csv").write_text("a.mp4 0\n")
    with pytest.raises(UserError, match="classnames.json"):
        build_dataset(tiny_cfg(tmp_path), "train")
