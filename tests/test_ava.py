"""AVA action detection: format readers and their bad-input errors, boxes through the spatial
transforms, the detection collate, the detector, the official-style frame AP (a case worked
out by hand), and a tiny end-to-end train + test on the synthetic AVA-format data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from avsf.config import ConfigError
from avsf.data import boxes
from avsf.data.datasets import ava
from avsf.engine.ava_eval import frame_ap, voc_average_precision
from avsf.errors import UserError
from avsf.presets import get_preset

LABEL_MAP = 'item {\n  name: "stand"\n  id: 1\n}\nitem { name: "talk to (e.g., self, a person)" id: 3 }\n'


def _write_dataset(root: Path, *, gt: str, proposals: str | None = None, excluded: str | None = None,
                   label_map: str | None = LABEL_MAP, videos=("vidA", "vidB"), split="train") -> Path:
    ann = root / "annotations"
    ann.mkdir(parents=True, exist_ok=True)
    (root / "videos").mkdir(exist_ok=True)
    for v in videos:
        (root / "videos" / f"{v}.mp4").write_bytes(b"")  # the readers only look at the names
    if label_map is not None:
        (ann / "ava_action_list_v2.2_for_activitynet_2019.pbtxt").write_text(label_map)
    (ann / f"ava_{split}_v2.2.csv").write_text(gt)
    if proposals is not None:
        (ann / f"ava_{split}_predicted_boxes.csv").write_text(proposals)
    if excluded is not None:
        (ann / f"ava_{split}_excluded_timestamps_v2.2.csv").write_text(excluded)
    return root


# --- parsing ------------------------------------------------------------------------------------
def test_label_map_any_layout(tmp_path):
    (tmp_path / "m.pbtxt").write_text(LABEL_MAP + 'item {\n  name: "no id here"\n}\n')
    names, bad = ava.read_label_map(tmp_path / "m.pbtxt")
    assert names == {1: "stand", 3: "talk to (e.g., self, a person)"}
    assert len(bad) == 1 and bad[0].line_no == 6 and "id" in bad[0].reason


def test_split_parses_boxes_merges_actions_and_applies_the_rules(tmp_path):
    gt = ("vidA,0902,0.1,0.2,0.5,0.9,1,0\n"
          "vidA,0902,0.1,0.2,0.5,0.9,3,0\n"  # same person, second action: one box, two labels
          "vidA,0902,0.6,0.2,0.9,0.9,3,1\n"
          "vidA,0903,0.1,0.2,0.5,0.9,12,0\n"  # a valid AVA action outside the label map: left out
          "vidB,0905,0.1,0.1,0.4,0.4,1,0\n")  # an excluded keyframe
    root = _write_dataset(tmp_path, gt=gt, excluded="vidB,905\n")
    s = ava.read_split(root=root, split="train")
    assert not s.bad_lines
    assert s.class_ids == [1, 3] and s.class_names[1].startswith("talk")
    assert [(k.video, k.timestamp) for k in s.keyframes] == [("vidA", 902)]
    kf = s.keyframes[0]
    np.testing.assert_allclose(kf.boxes, [[0.1, 0.2, 0.5, 0.9], [0.6, 0.2, 0.9, 0.9]], atol=1e-6)
    np.testing.assert_array_equal(kf.labels, [[1, 1], [0, 1]])
    assert s.stats["gt_not_evaluated"] == 1 and s.stats["excluded_keyframes"] == 1
    assert sorted((k, c) for k, c, _ in s.groundtruth) == [(("vidA", 902), 0), (("vidA", 902), 1), (("vidA", 902), 1)]


def test_proposals_threshold_and_labels_from_overlap(tmp_path):
    gt = "vidA,902,0.1,0.2,0.5,0.9,3,0\n"
    props = ("vidA,902,0.11,0.21,0.5,0.9,,0.95\n"  # overlaps the GT box: takes its action
             "vidA,902,0.6,0.1,0.9,0.5,,0.9\n"  # a false positive: no action
             "vidA,902,0.6,0.1,0.9,0.5,-1,0.5\n")  # below the 0.8 threshold
    root = _write_dataset(tmp_path, gt=gt, proposals=props, split="val")
    s = ava.read_split(root=root, split="test", proposal_threshold=0.8)
    assert s.stats["proposals"] == 2 and s.stats["proposals_below_threshold"] == 1
    kf = s.keyframes[0]
    order = np.argsort(kf.boxes[:, 0])
    np.testing.assert_array_equal(kf.labels[order], [[0, 1], [0, 0]])
    gt_only = ava.read_split(root=root, split="val", test_boxes="gt")
    np.testing.assert_allclose(gt_only.keyframes[0].boxes, [[0.1, 0.2, 0.5, 0.9]], atol=1e-6)


def test_every_bad_line_is_reported_with_file_and_line(tmp_path):
    gt = ("vidA,902,0.1,0.2,0.5,0.9,1,0\n"
          "vidA,902,0.1,0.2,1.5,0.9,1,0\n"  # 2: outside [0, 1]
          "vidA,902,0.5,0.2,0.4,0.9,1,0\n"  # 3: x2 <= x1
          "vidZ,902,0.1,0.2,0.5,0.9,1,0\n"  # 4: unknown video
          "vidA,902,0.1,0.2,0.5,0.9,99,0\n"  # 5: not an AVA action
          "vidA,902,0.1,0.2,0.5\n"  # 6: wrong column count
          "vidA,902,0.1,0.2,0.5,0.9,,0\n")  # 7: GT without action
    props = "vidA,902,0.1,0.2,0.5,0.9,\n"  # 1: a proposal without a score
    root = _write_dataset(tmp_path, gt=gt, proposals=props, split="val")
    s = ava.read_split(root=root, split="val")
    got = sorted((Path(b.file).name, b.line_no) for b in s.bad_lines)
    assert got == [("ava_val_predicted_boxes.csv", 1)] + [("ava_val_v2.2.csv", n) for n in range(2, 8)]
    cfg = get_preset("slowfast_tiny_ava").with_overrides([f"data.root={root}"])
    with pytest.raises(UserError) as err:
        ava.build(cfg, "val", root)
    msg = str(err.value)
    assert msg.startswith("7 bad line(s)")
    for needle in ("ava_val_v2.2.csv:2: box", "ava_val_v2.2.csv:3: empty box", "ava_val_v2.2.csv:4: video 'vidZ'",
                   "ava_val_v2.2.csv:5: action_id 99", "ava_val_v2.2.csv:6: expected 7 or 8",
                   "ava_val_v2.2.csv:7: ground-truth row without", "ava_val_predicted_boxes.csv:1: a proposal needs a score"):
        assert needle in msg, needle


def test_missing_label_map_and_missing_files(tmp_path):
    root = _write_dataset(tmp_path, gt="vidA,902,0.1,0.2,0.5,0.9,1,0\n", label_map=None)
    with pytest.raises(UserError, match="label map not found: looked for .*ava_action_list_v2.2_for_activitynet_2019"):
        ava.read_split(root=root, split="train")
    root2 = _write_dataset(tmp_path / "b", gt="vidA,902,0.1,0.2,0.5,0.9,1,0\n", split="val")
    with pytest.raises(UserError, match="proposals not found"):
        ava.read_split(root=root2, split="test")


def test_check_data_lists_ava_bad_lines(tmp_path):
    from avsf.data.check import scan_dataset

    root = _write_dataset(tmp_path, gt="vidA,902,0.1,0.2,0.5,0.9,1,0\nvidA,902,0.1,0.2,1.5,0.9,1,0\n")
    report = scan_dataset(dataset="ava", root=str(root), split_file=None, split="train", workers=1, timeout_s=20)
    assert report.bad_lines == [{"line": 2, "text": "vidA,902,0.1,0.2,1.5,0.9,1,0",
                                 "reason": "ava_train_v2.2.csv: box (0.1, 0.2, 1.5, 0.9) lies outside [0, 1] (coordinates are normalised)"}]


def test_config_checks():
    with pytest.raises(ConfigError, match="model.task=detect needs a visual model"):
        get_preset("avslowfast_tiny_ava").with_overrides(["model.arch=audio_only"])
    with pytest.raises(ConfigError, match="set model.task=detect"):
        get_preset("avslowfast_tiny").with_overrides(["data.dataset=ava"])
    with pytest.raises(ConfigError, match="data.ava_test_boxes"):
        get_preset("avslowfast_tiny_ava").with_overrides(["data.ava_test_boxes=all"])


# --- boxes through the transforms, collate ---------------------------------------------------------
def test_map_and_flip_boxes():
    # a 100 x 200 frame; window x0=50, y0=10, 100 x 80 source pixels shown at 50 x 40: scale 1/2
    b = boxes.map_boxes(np.array([[0.5, 0.5, 0.75, 1.0]]), src_h=100, src_w=200, y0=10, x0=50, win_h=80, win_w=100,
                        out_h=40, out_w=50)
    # x: 100 -> (100-50)/2 = 25, 150 -> 50; y: 50 -> 20, 100 -> 45 clipped to 40
    np.testing.assert_allclose(b, [[25, 20, 50, 40]])
    np.testing.assert_allclose(boxes.flip_boxes(b, width=50), [[0, 20, 25, 40]])


def _frames_with_square(h=60, w=90, box=(0.5, 0.2, 0.8, 0.7)):
    frames = np.zeros((4, h, w, 3), dtype=np.uint8)
    x1, y1, x2, y2 = int(box[0] * w), int(box[1] * h), int(box[2] * w), int(box[3] * h)
    frames[:, y1:y2, x1:x2] = 255
    return frames, np.array([box], dtype=np.float32)


@pytest.mark.parametrize("seed", range(6))
def test_train_transform_maps_the_box_onto_the_picture(seed):
    frames, boxes = _frames_with_square()
    clip, b = ava.train_boxes_transform(frames, boxes, rng=np.random.default_rng(seed), jitter=(48, 64), crop=40,
                                        flip=True)
    assert clip.dtype == torch.uint8  # raw pixels: the trainer normalises on the device
    img = clip[0, 0].numpy() / 255.0  # [40, 40], 1 inside the white square
    x1, y1, x2, y2 = b[0].round().int().tolist()
    if x2 <= x1 or y2 <= y1:  # the crop missed the square: the box is clipped to nothing
        assert img.max() < 0.1
        return
    inside = img[y1 + 1:y2 - 1, x1 + 1:x2 - 1]
    assert inside.size and inside.min() > 0.9
    mask = np.ones_like(img, dtype=bool)
    mask[max(0, y1 - 1):y2 + 1, max(0, x1 - 1):x2 + 1] = False
    assert img[mask].max(initial=0) < 0.1


@pytest.mark.parametrize("crop", [None, 48])
def test_eval_transform_full_frame_and_centre_crop(crop):
    frames, boxes = _frames_with_square()
    clip, b = ava.eval_boxes_transform(frames, boxes, short_side=48, crop=crop)
    assert tuple(clip.shape[-2:]) == ((48, 72) if crop is None else (48, 48)) and clip.dtype == torch.uint8
    img = clip[0, 0].numpy() / 255.0
    x1, y1, x2, y2 = b[0].round().int().tolist()
    assert img[y1 + 1:y2 - 1, x1 + 1:x2 - 1].min() > 0.9
    if crop is None:
        np.testing.assert_allclose(b[0], [36, 9.6, 57.6, 33.6], atol=1e-4)


def test_detection_collate_pads_and_indexes_boxes():
    def sample(w, r, item):
        return {"slow": torch.ones(3, 2, 8, w), "fast": torch.ones(3, 8, 8, w), "audio": torch.zeros(1, 4, 4),
                "boxes": torch.arange(4 * r, dtype=torch.float32).view(r, 4), "label": torch.ones(r, 3),
                "item_index": torch.tensor(item), "video_index": torch.tensor(0)}

    from avsf.data.loader import SampleLoader, collate

    batch = collate([sample(10, 2, 5), sample(12, 1, 7)], stack=ava.AVADataset.collate)
    assert batch["slow"].shape == (2, 3, 2, 8, 12) and batch["slow"][0, :, :, :, 10:].abs().sum() == 0
    assert batch["boxes"].shape == (3, 5) and batch["boxes"][:, 0].tolist() == [0, 0, 1]
    assert batch["boxes"][2, 1:].tolist() == [0, 1, 2, 3]
    assert batch["box_item"].tolist() == [5, 5, 7] and batch["box_slot"].tolist() == [0, 1, 0]
    assert batch["label"].shape == (3, 3) and batch["_failures"] == []

    class Boxes(torch.utils.data.Dataset):  # the loader batches with the dataset's own collate
        collate = staticmethod(ava.detection_collate)

        def __len__(self):
            return 2

        def __getitem__(self, i):
            return sample(10 + 2 * i, 2 - i, 5 + 2 * i)

    loaded = next(iter(SampleLoader(Boxes(), batch_size=2, num_workers=0, shuffle=False, seed=0, epoch=0,
                                    drop_last=False)))
    assert loaded["boxes"].shape == (3, 5) and loaded["box_item"].tolist() == [5, 5, 7]


# --- the detector ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["slowfast_tiny_ava", "avslowfast_tiny_ava"])
def test_detector_shapes_and_backward(preset, one_torch_thread):
    from avsf.models import build_model
    from avsf.models.network import example_inputs

    cfg = get_preset(preset).with_overrides(["model.num_classes=5"])
    model = build_model(cfg.model)
    batch = example_inputs(cfg.model, crop=64, batch=2, width=80, with_negatives=True)  # res5: 4 x 5
    batch["boxes"] = torch.tensor([[0, 1.0, 2, 30, 60], [1, 10, 10, 50, 40], [1, 0, 0, 80, 64]])
    feats = {}
    model.slow["res5"].register_forward_hook(lambda m, i, o: feats.update(res5=o.shape) and None)
    model.train()
    out = model(batch, drop_audio=True)
    assert out["logits"].shape == (3, 5)
    assert feats["res5"][-2:] == (4, 5)  # stride 16: res5 keeps res4's size (dilated, not strided)
    loss = out["logits"].sum() + out.get("avs_loss", 0.0)
    loss.backward()
    assert model.head.fc.weight.grad is not None
    if preset.startswith("av"):
        assert "avs_loss" in out  # AVS stays per clip
    model.eval()
    assert model(batch)["logits"].shape == (3, 5)
    with pytest.raises(UserError, match="boxes"):
        model({k: v for k, v in batch.items() if k != "boxes"})


def test_flops_count_the_detector():
    from avsf.flops import count_model

    sf = count_model(get_preset("slowfast_r50_ava").model, 256, width=320)
    av = count_model(get_preset("avslowfast_r50_ava").model, 256, width=320)
    assert sf["gflops"] > 60 and av["gflops"] > sf["gflops"] and sf["gflops_audio"] == 0
    assert abs((av["gflops"] - sf["gflops"]) - av["gflops_audio"]) < 0.2


# --- frame AP ---------------------------------------------------------------------------------------------
def test_voc_ap_all_point_interpolation():
    # precision 1, 0.5, 2/3 at recall 0.5, 0.5, 1: interpolated 1 on [0, .5], 2/3 on [.5, 1]
    assert voc_average_precision(np.array([1, 0.5, 2 / 3]), np.array([0.5, 0.5, 1.0])) == pytest.approx(0.5 + 1 / 3)


def test_frame_ap_hand_computed():
    """Class 0: frame A has GT boxes G1 = [0,0,.5,.5] and G2 = [.5,.5,1,1]; frame B has G3 =
    [0,0,.5,.5]. Detections, by score:
        .9  A [0,0,.5,.5]   IoU(G1) = 1            -> TP (G1 taken)
        .8  A [0,0,.5,.45]  best is G1 (IoU .9), but G1 is taken -> FP (no fall-back)
        .7  B [.5,.5,1,1]   IoU(G3) = 0            -> FP
        .6  A [.5,.5,1,1]   IoU(G2) = 1            -> TP
        .5  B [0,0,.5,.5]   IoU(G3) = 1            -> TP
    3 GT. precision 1, 1/2, 1/3, 2/4, 3/5 at recall 1/3, 1/3, 1/3, 2/3, 1. Made monotone from
    the right: 1, .6, .6, .6, .6. AP = 1/3 * 1 + 1/3 * .6 + 1/3 * .6 = 2.2 / 3 = .7333.
    Frame D (excluded) holds a class-0 GT that nothing detects: excluded, so it is no miss.
    Class 1: GT [0,0,.5,.5] in frame A. Detections: .95 in frame C (no GT there) -> FP;
    .4 A [.05,0,.5,.5] IoU = .225/.25 = .9 -> TP; .3 A [.1,.1,.6,.6] (IoU .16/.34 = .47,
    and the box is taken anyway) -> FP. precision 0, 1/2, 1/3 at recall 0, 1, 1 -> AP = 1 * .5.
    Class 2 has a detection but no GT: left out of the mean. Class 3 is not evaluated.
    mAP = (.7333 + .5) / 2 = 61.67 %."""
    A, B, C, D = ("v", 1), ("v", 2), ("w", 1), ("w", 2)
    gt = [(A, 0, (0, 0, .5, .5)), (A, 0, (.5, .5, 1, 1)), (B, 0, (0, 0, .5, .5)), (D, 0, (0, 0, 1, 1)),
          (A, 1, (0, 0, .5, .5)), (A, 3, (0, 0, 1, 1))]
    det = [(A, 0, .9, (0, 0, .5, .5)), (A, 0, .8, (0, 0, .5, .45)), (B, 0, .7, (.5, .5, 1, 1)),
           (A, 0, .6, (.5, .5, 1, 1)), (B, 0, .5, (0, 0, .5, .5)),
           (C, 1, .95, (0, 0, .5, .5)), (A, 1, .4, (.05, 0, .5, .5)), (A, 1, .3, (.1, .1, .6, .6)),
           (A, 2, .9, (0, 0, 1, 1)), (A, 3, .9, (0, 0, 1, 1))]
    mean_ap, aps = frame_ap(det, gt, classes=[0, 1, 2], excluded={D})
    assert aps == {0: pytest.approx(2.2 / 3), 1: pytest.approx(0.5)}
    assert mean_ap == pytest.approx(100 * (2.2 / 3 + 0.5) / 2)
    # without the exclusion, frame D's GT is a miss: recall tops out at 3/4
    _, aps = frame_ap(det, gt, classes=[0, 1, 2])
    assert aps[0] == pytest.approx(0.25 * 1 + 0.25 * 0.6 + 0.25 * 0.6)


# --- end to end ------------------------------------------------------------------------------------------
def test_tiny_train_and_test_on_synthetic_ava(tmp_path, one_torch_thread):
    from conftest import test_data_dir

    from avsf.engine.train import train

    cfg = get_preset("avslowfast_tiny_ava").with_overrides(
        [f"data.synthetic_root={test_data_dir()}", "solver.epochs=1", "data.num_workers=0", "solver.batch_size=16"])
    final = train(cfg, tmp_path / "run")
    assert 0 <= final["map"] <= 100 and final["num_keyframes"] > 10
    assert set(final["per_class_ap"]) <= {"hop + knock", "hop + ring", "shake", "rise", "stand", "hold a seven"}
    assert len(final["per_class_ap"]) >= 5 and final["gflops"] > 0
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert "val_map" in lines[0] and lines[-1]["kind"] == "test" and "test_map" in lines[-1]


def test_synthetic_ava_is_deterministic_and_sound_names_the_hopper():
    from avsf.data.synthetic import detection as sd

    spec = sd.SCALES["smoke"]
    a, b = (sd.render_video(spec=spec, seed=3, split="val", index=1) for _ in range(2))
    assert a["gt"] == b["gt"] and a["proposals"] == b["proposals"] and np.array_equal(a["frames"], b["frames"])
    assert np.array_equal(a["audio"], b["audio"])
    actions = [act["action"] for act in a["meta"]["actors"]]
    assert sum(x.startswith("hop") for x in actions) == 1 and 2 <= len(actions) <= 3
    c = sd.render_video(spec=spec, seed=4, split="val", index=1)
    assert c["gt"] != a["gt"]


def test_training_on_proposals_too(tmp_path):
    gt = "vidA,902,0.1,0.2,0.5,0.9,3,0\n"
    root = _write_dataset(tmp_path, gt=gt, proposals="vidA,902,0.6,0.1,0.9,0.5,,0.9\n")
    assert len(ava.read_split(root=root, split="train").keyframes[0].boxes) == 1  # GT only by default
    kf = ava.read_split(root=root, split="train", train_proposals=True).keyframes[0]
    assert len(kf.boxes) == 2 and kf.labels.tolist() == [[0, 1], [0, 0]]  # the proposal is a negative
