"""AVA v2.1 / v2.2 action detection: box CSVs, person proposals, excluded timestamps, the
label map, and the dataset of keyframe clips with their person boxes.

Folder layout (``data.root``; the conventions not fixed by AVA itself are ours)::

    ROOT/videos/<video_id>.mp4            one file per video id (.mp4, .mkv, .webm or .avi; the
                                          first found). Either the 15-minute cuts (movie
                                          seconds 900-1800 at file time 0-900:
                                          data.ava_time_offset=900, the default) or whole
                                          movies (data.ava_time_offset=0)
    ROOT/annotations/ (or data.ava_annotation_dir)
      ava_{train,val}_{V}.csv             ground truth: video_id,timestamp,x1,y1,x2,y2,action_id,person_id
      ava_action_list_{V}_for_activitynet_{2018|2019}.pbtxt   the label map: the evaluated
                                          classes (60); `ava_action_list_{V}.pbtxt` also accepted
      ava_{train,val}_excluded_timestamps_{V}.csv   video_id,timestamp (optional)
      ava_{train,val}_predicted_boxes.csv  person proposals (PySlowFast's name):
                                          video_id,timestamp,x1,y1,x2,y2,action_id,score
                                          (action_id usually empty; the 8th column is the
                                          detector's score, kept when >= data.ava_proposal_threshold)

``{V}`` is ``data.ava_version`` (v2.1 or v2.2). Coordinates are normalised to [0, 1] (x along
the width). Timestamps are whole movie seconds; keyframes are at 1 fps.

Splits: ``train`` reads the train files; ``val`` and ``test`` both read the val files (AVA's
test labels are not public; the paper and PySlowFast report on val).

Boxes: training uses the ground-truth boxes (one box per person and keyframe, its actions
multi-hot), plus the proposals above the threshold when ``data.ava_train_proposals`` (each
labelled with the actions of the ground-truth box it overlaps most at IoU >= 0.5, else none:
a negative). Val/test score the proposals above the threshold (``data.ava_test_boxes =
"proposals"``) or the ground-truth boxes (``"gt"``); a keyframe without any box to score is
not loaded, but its ground truth still counts in the evaluation (as misses).

Clips: ``slow_frames x tau`` frames centred on the keyframe (frames before the start or past
the end repeat the first or last, as PySlowFast pads), the audio of the same span.
Spatially, as PySlowFast's AVA loader does: train: short side jittered in
``data.train_jitter``, a random ``train_crop`` square, a random flip, boxes mapped through
all three and clipped to the crop; val: short side ``test_short_side`` then the centre
``test_crop`` square (PySlowFast's val mode); test: the full frame with short side
``test_short_side``, no crop (PySlowFast's test mode and the paper's fully convolutional
test). Batches of full frames of different sizes are padded with black (uint8 0) at the right
and bottom.

Bad input is reported all at once (every bad line with its file and line number) as one
:class:`~avsf.errors.UserError`: coordinates outside [0, 1] or empty boxes, unknown videos,
action ids outside the AVA vocabulary (1..80, or the label map's largest id), wrong column
counts, proposals without a score, a missing label map. Rows whose action is a valid AVA id
but not one of the label map's evaluated classes are left out and counted (the official
evaluation does the same); ``avsf check-data --dataset ava`` lists the bad lines too.

A sample (besides "slow", "fast", "audio", ... as in docs/INTERFACES.md): ``"boxes"`` [R, 4]
float32 (x1, y1, x2, y2 in pixels of the sample's frames), ``"label"`` [R, K] multi-hot,
``"item_index"`` int64. :func:`detection_collate` (the dataset's ``collate``) concatenates the
boxes into [R_total, 5] with the batch index first and adds ``"box_item"`` [R_total] (the item of each box) and
``"box_slot"`` (its index among that item's boxes).
"""

from __future__ import annotations

import logging
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from avsf.data.boxes import flip_boxes, iou, map_boxes
from avsf.data.datasets.base import AVClipDataset, evenly_spaced
from avsf.data.datasets.records import BadLine, SplitListing, VideoRecord
from avsf.errors import UserError

log = logging.getLogger("avsf.data")

AVA_NUM_ACTIONS = 80  # the AVA action vocabulary; the evaluated 60 are a subset (the label map)
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi")
SPLIT_FILES = {"train": "train", "val": "val", "test": "val"}
MAX_REPORTED = 40  # bad lines printed in one error (all are counted)


# --- file names -------------------------------------------------------------------------------
def annotation_dir(root: str | os.PathLike, cfg_dir: str = "") -> Path:
    return Path(cfg_dir).expanduser() if cfg_dir else Path(root) / "annotations"


def label_map_path(ann: Path, version: str) -> Path:
    """The label map file of `version` in `ann` (the ActivityNet list, else the plain one)."""
    year = "2018" if version == "v2.1" else "2019"
    candidates = [ann / f"ava_action_list_{version}_for_activitynet_{year}.pbtxt",
                  ann / f"ava_action_list_{version}.pbtxt"]
    for c in candidates:
        if c.is_file():
            return c
    raise UserError(f"AVA label map not found: looked for {candidates[0]} and {candidates[1].name}; put the "
                    f"label map (pbtxt, `item {{ name: \"...\" id: N }}`) there or set data.ava_annotation_dir")


def split_files(ann: Path, split: str, version: str) -> dict[str, Path]:
    s = SPLIT_FILES[split]
    return {"gt": ann / f"ava_{s}_{version}.csv", "excluded": ann / f"ava_{s}_excluded_timestamps_{version}.csv",
            "proposals": ann / f"ava_{s}_predicted_boxes.csv"}


# --- parsers --------------------------------------------------------------------------------------
def read_label_map(path: str | os.PathLike) -> tuple[dict[int, str], list[BadLine]]:
    """{action id: name} of a pbtxt label map (``item { name: "..." id: N }``, any layout;
    ``label_id`` is read as ``id``), and the items that do not parse."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"AVA label map not found: {path}")
    text = path.read_text(errors="replace")
    out: dict[int, str] = {}
    bad: list[BadLine] = []
    for m in re.finditer(r"item\s*\{(.*?)\}", text, flags=re.S):
        line = text.count("\n", 0, m.start()) + 1
        body = m.group(1)
        name = re.search(r'name:\s*"([^"]*)"', body)
        ident = re.search(r"\b(?:label_id|id):\s*(-?\d+)", body)
        if not name or not ident:
            bad.append(BadLine(str(path), line, m.group(0).replace("\n", " "), "item needs name: \"...\" and id: N"))
            continue
        k = int(ident.group(1))
        if k < 1 or k in out:
            bad.append(BadLine(str(path), line, m.group(0).replace("\n", " "),
                               f"id {k} is {'repeated' if k in out else 'not positive'}"))
            continue
        out[k] = name.group(1)
    if not out and not bad:
        bad.append(BadLine(str(path), 1, text[:80], "no `item { name: \"...\" id: N }` entries"))
    return out, bad


@dataclass
class BoxRow:
    """One row of a box CSV (coordinates normalised)."""

    video: str
    timestamp: int
    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    action: int  # AVA action id; -1 = none (a proposal)
    person: int = -1
    score: float = 1.0
    line_no: int = 0


def read_boxes(path: str | os.PathLike, *, kind: str, label_ids: set[int] | None = None,
               known_videos: set[str] | None = None, vocabulary: int = AVA_NUM_ACTIONS,
               threshold: float = 0.0) -> tuple[list[BoxRow], list[BadLine], dict[str, int]]:
    """Rows of a box CSV, the bad lines (all of them) and counts of rows left out on purpose.

    kind "gt": ``video_id,timestamp,x1,y1,x2,y2,action_id[,person_id]`` (action required);
    kind "proposals": ``video_id,timestamp,x1,y1,x2,y2,action_id,score`` (action may be
    empty; a score is required; rows below `threshold` are left out).
    Rows whose action is a valid id (1..`vocabulary`) outside `label_ids` are left out
    (counted as "not_evaluated"); ids outside 1..`vocabulary` are bad lines.
    """
    path = Path(path)
    rows: list[BoxRow] = []
    bad: list[BadLine] = []
    skipped = {"not_evaluated": 0, "below_threshold": 0}
    want = (7, 8) if kind == "gt" else (8,)
    for no, raw in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        parts = [p.strip() for p in raw.split(",")]

        def fail(reason: str) -> None:
            bad.append(BadLine(str(path), no, raw, reason))

        if len(parts) not in want:
            if kind == "proposals" and len(parts) == 7:
                fail("a proposal needs a score: expected video_id,timestamp,x1,y1,x2,y2,action_id,score (8 columns), got 7")
            else:
                fail(f"expected {' or '.join(map(str, want))} comma-separated columns "
                     f"(video_id,timestamp,x1,y1,x2,y2,action_id,{'person_id' if kind == 'gt' else 'score'}), got {len(parts)}")
            continue
        video = parts[0]
        if not video:
            fail("empty video_id")
            continue
        if known_videos is not None and video not in known_videos:
            fail(f"video {video!r} has no file in the videos folder")
            continue
        try:
            ts_f = float(parts[1])
            coords = tuple(float(x) for x in parts[2:6])
        except ValueError:
            fail("timestamp and x1,y1,x2,y2 must be numbers")
            continue
        if ts_f != int(ts_f) or ts_f < 0:
            fail(f"timestamp {parts[1]} is not a whole, non-negative second (AVA keyframes are at 1 fps)")
            continue
        x1, y1, x2, y2 = coords
        if not all(0.0 <= c <= 1.0 for c in coords):
            fail(f"box ({parts[2]}, {parts[3]}, {parts[4]}, {parts[5]}) lies outside [0, 1] (coordinates are normalised)")
            continue
        if x2 <= x1 or y2 <= y1:
            fail(f"empty box: x2 <= x1 or y2 <= y1 ({parts[2]}, {parts[3]}, {parts[4]}, {parts[5]})")
            continue
        action = -1
        if parts[6]:
            try:
                action = int(float(parts[6]))
            except ValueError:
                fail(f"action_id {parts[6]!r} is not an integer")
                continue
            if action == -1 and kind == "proposals":
                pass  # PySlowFast writes -1 for "no label"
            elif not 1 <= action <= vocabulary:
                fail(f"action_id {action} is not an AVA action (1..{vocabulary})")
                continue
        elif kind == "gt":
            fail("ground-truth row without an action_id")
            continue
        person, score = -1, 1.0
        if len(parts) == 8:
            if kind == "gt":
                try:
                    person = int(float(parts[7])) if parts[7] else -1
                except ValueError:
                    fail(f"person_id {parts[7]!r} is not an integer")
                    continue
            else:
                try:
                    score = float(parts[7])
                except ValueError:
                    fail(f"score {parts[7]!r} is not a number")
                    continue
                if not 0.0 <= score <= 1.0:
                    fail(f"score {score} lies outside [0, 1]")
                    continue
        if action > 0 and label_ids is not None and action not in label_ids:
            skipped["not_evaluated"] += 1
            continue
        if kind == "proposals" and score < threshold:
            skipped["below_threshold"] += 1
            continue
        rows.append(BoxRow(video, int(ts_f), coords, action, person, score, no))
    return rows, bad, skipped


def read_excluded(path: str | os.PathLike) -> tuple[set[tuple[str, int]], list[BadLine]]:
    """(video_id, timestamp) keys of an excluded-timestamps CSV, and its bad lines."""
    path = Path(path)
    keys: set[tuple[str, int]] = set()
    bad: list[BadLine] = []
    for no, raw in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not raw.strip():
            continue
        parts = [p.strip() for p in raw.split(",")]
        try:
            if len(parts) != 2 or not parts[0]:
                raise ValueError
            ts = float(parts[1])
            if ts != int(ts):
                raise ValueError
        except ValueError:
            bad.append(BadLine(str(path), no, raw, "expected video_id,timestamp (a whole second)"))
            continue
        keys.add((parts[0], int(ts)))
    return keys, bad


def format_bad_lines(bad: list[BadLine], *, what: str) -> str:
    shown = "\n".join(f"  {b.file}:{b.line_no}: {b.reason}: {b.text.strip()[:120]!r}" for b in bad[:MAX_REPORTED])
    more = f"\n  ... and {len(bad) - MAX_REPORTED} more" if len(bad) > MAX_REPORTED else ""
    return f"{len(bad)} bad line(s) in {what}; fix or remove them:\n{shown}{more}"


# --- one split -----------------------------------------------------------------------------------
@dataclass
class Keyframe:
    """One keyframe to load: its video, second, boxes to score or train on, their labels."""

    video: str
    timestamp: int
    boxes: np.ndarray  # [R, 4] normalised x1, y1, x2, y2
    labels: np.ndarray  # [R, K] float32 multi-hot (class indices of the label map)


@dataclass
class AVASplit:
    """What the annotation files say about one split."""

    split: str
    class_ids: list[int]  # label-map action ids, in class-index order
    class_names: list[str]
    keyframes: list[Keyframe]
    groundtruth: list[tuple[tuple[str, int], int, tuple[float, float, float, float]]]  # (key, class index, box)
    excluded: set[tuple[str, int]]
    videos: dict[str, str]  # video id -> file
    bad_lines: list[BadLine] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)


def find_videos(video_dir: Path) -> dict[str, str]:
    """{video id: file} of a videos folder (the first extension found per id)."""
    out: dict[str, str] = {}
    if not video_dir.is_dir():
        return out
    for p in sorted(video_dir.iterdir()):
        if p.suffix.lower() in VIDEO_EXTENSIONS and p.stem not in out:
            out[p.stem] = str(p)
    return out


def _group_gt(rows: list[BoxRow], class_index: dict[int, int], k: int) -> dict[tuple[str, int], list[tuple[tuple, np.ndarray]]]:
    """Ground truth per keyframe: one entry per person box (rows with the same box merged),
    with its multi-hot labels."""
    per_key: dict[tuple[str, int], dict[tuple, np.ndarray]] = defaultdict(dict)
    for r in rows:
        boxes = per_key[(r.video, r.timestamp)]
        box_key = tuple(round(c, 4) for c in r.box)
        if box_key not in boxes:
            boxes[box_key] = np.zeros(k, dtype=np.float32)
        boxes[box_key][class_index[r.action]] = 1.0
    return {key: list(v.items()) for key, v in per_key.items()}


def read_split(*, root: str | os.PathLike, split: str, version: str = "v2.2", annotation_dir_: str = "",
               proposal_threshold: float = 0.8, train_proposals: bool = False, test_boxes: str = "proposals",
               check_videos: bool = True) -> AVASplit:
    """Parse one split's files (never raises for bad lines: they are returned)."""
    if split not in SPLIT_FILES:
        raise UserError(f"split {split!r} is not one of {', '.join(SPLIT_FILES)}")
    root = Path(root)
    ann = annotation_dir(root, annotation_dir_)
    if not ann.is_dir():
        raise UserError(f"AVA annotation folder not found: {ann}; put the CSVs and the label map there or set "
                        f"data.ava_annotation_dir")
    lm_path = label_map_path(ann, version)
    label_map, bad = read_label_map(lm_path)
    class_ids = sorted(label_map)
    class_index = {a: i for i, a in enumerate(class_ids)}
    k = len(class_ids)
    files = split_files(ann, split, version)
    if not files["gt"].is_file():
        raise UserError(f"AVA {split} boxes not found: looked for {files['gt']} (ground truth: "
                        f"video_id,timestamp,x1,y1,x2,y2,action_id,person_id); check data.ava_version={version}")
    videos = find_videos(root / "videos")
    known = set(videos) if check_videos else None
    vocab = max([AVA_NUM_ACTIONS] + class_ids)
    gt_rows, gt_bad, gt_skip = read_boxes(files["gt"], kind="gt", label_ids=set(class_ids), known_videos=known,
                                          vocabulary=vocab)
    bad += gt_bad
    excluded: set[tuple[str, int]] = set()
    if files["excluded"].is_file():
        excluded, ex_bad = read_excluded(files["excluded"])
        bad += ex_bad
    evaluating = split != "train"
    use_proposals = (evaluating and test_boxes == "proposals") or (not evaluating and train_proposals)
    prop_rows: list[BoxRow] = []
    prop_skip = {"below_threshold": 0}
    if use_proposals:
        if not files["proposals"].is_file():
            raise UserError(f"AVA {split} person proposals not found: looked for {files['proposals']} "
                            f"(video_id,timestamp,x1,y1,x2,y2,action_id,score); or set "
                            f"{'data.ava_test_boxes=gt' if evaluating else 'data.ava_train_proposals=false'}")
        prop_rows, p_bad, prop_skip = read_boxes(files["proposals"], kind="proposals", known_videos=known,
                                                 vocabulary=vocab, threshold=proposal_threshold)
        bad += p_bad
    gt = _group_gt(gt_rows, class_index, k)
    proposals: dict[tuple[str, int], list[tuple[float, ...]]] = defaultdict(list)
    for r in prop_rows:
        proposals[(r.video, r.timestamp)].append(r.box)
    keyframes = []
    keys = sorted((set(gt) | set(proposals)) - excluded)
    for key in keys:
        gt_boxes = gt.get(key, [])
        gt_arr = np.array([b for b, _ in gt_boxes], dtype=np.float32).reshape(-1, 4)
        gt_lab = np.stack([lab for _, lab in gt_boxes]) if gt_boxes else np.zeros((0, k), dtype=np.float32)
        boxes, labels = [], []
        if not evaluating or test_boxes == "gt":
            boxes.append(gt_arr)
            labels.append(gt_lab)
        if use_proposals and proposals.get(key):
            p = np.unique(np.array(proposals[key], dtype=np.float32).reshape(-1, 4), axis=0)
            lab = np.zeros((len(p), k), dtype=np.float32)
            if len(gt_arr):  # the actions of the ground-truth box each proposal overlaps most
                ov = iou(p, gt_arr)
                best = ov.argmax(1)
                hit = ov[np.arange(len(p)), best] >= 0.5
                lab[hit] = gt_lab[best[hit]]
            boxes.append(p)
            labels.append(lab)
        b = np.concatenate(boxes) if boxes else np.zeros((0, 4), np.float32)
        if len(b):
            keyframes.append(Keyframe(key[0], key[1], b.astype(np.float32), np.concatenate(labels).astype(np.float32)))
    groundtruth = [(key, int(c), tuple(float(x) for x in box)) for key, entries in gt.items() if key not in excluded
                   for box, lab in entries for c in np.flatnonzero(lab)]
    stats = {"gt_rows": len(gt_rows), "gt_not_evaluated": gt_skip["not_evaluated"],
             "proposals": len(prop_rows), "proposals_below_threshold": prop_skip["below_threshold"],
             "excluded_keyframes": len(excluded & (set(gt) | set(proposals))), "keyframes": len(keyframes),
             "gt_keyframes": len(set(gt) - excluded), "bad_lines": len(bad)}
    return AVASplit(split=split, class_ids=class_ids, class_names=[label_map[a] for a in class_ids],
                    keyframes=keyframes, groundtruth=groundtruth, excluded=excluded, videos=videos,
                    bad_lines=bad, stats=stats, files={k_: str(v) for k_, v in files.items()} | {"label_map": str(lm_path)})


def read_split_listing(*, root: str | os.PathLike, split_dir: str | os.PathLike, split: str) -> SplitListing:
    """The videos of a split and its bad lines (for ``avsf check-data --dataset ava``; the
    split folder, when not the root, is the annotation folder)."""
    ann = "" if Path(split_dir) == Path(root) else str(split_dir)
    s = read_split(root=root, split=split, annotation_dir_=ann, test_boxes="gt", check_videos=True)
    used = sorted({kf.video for kf in s.keyframes})
    records = [VideoRecord(path=s.videos[v], name=v) for v in used if v in s.videos]
    bad = [BadLine(b.file, b.line_no, b.text, f"{Path(b.file).name}: {b.reason}") for b in s.bad_lines]
    return SplitListing(records=records, bad_lines=bad, num_classes=len(s.class_ids),
                        class_names=s.class_names, multi_label=True, split_file=s.files["gt"])


# --- boxes through the spatial transforms ---------------------------------------------------------
def train_boxes_transform(frames: np.ndarray, boxes: np.ndarray, *, rng: np.random.Generator,
                          jitter: tuple[int, int], crop: int, flip: bool):
    """The training transform of :func:`avsf.data.transforms.train_transform` (same random
    draws), with the boxes mapped onto the crop: normalised [R,4] -> pixels of the crop,
    clipped to it, mirrored when the clip is flipped.

    Returns (uint8 [3,N,crop,crop], float32 [R,4]); normalising is the trainer's (on the device)."""
    import torch
    from torchvision.transforms.v2 import functional as TF

    from avsf.data.transforms import channels_first, resized_window, scaled_size, source_window, to_tensor_frames

    x = to_tensor_frames(frames)
    src_h, src_w = x.shape[-2], x.shape[-1]
    short = max(int(rng.integers(jitter[0], jitter[1] + 1)), crop)
    h, w = scaled_size(src_h, src_w, short)
    top = int(rng.integers(0, h - crop + 1))
    left = int(rng.integers(0, w - crop + 1))
    x = resized_window(x, top=top, left=left, crop=crop, scaled=(h, w))
    y0, x0, win_h, win_w = source_window(src_h, src_w, top=top, left=left, crop=crop, scaled=(h, w))
    b = map_boxes(boxes, src_h=src_h, src_w=src_w, y0=y0, x0=x0, win_h=win_h, win_w=win_w, out_h=crop, out_w=crop)
    if flip and rng.random() < 0.5:
        x = TF.horizontal_flip(x)
        b = flip_boxes(b, width=crop)
    return channels_first(x), torch.from_numpy(b)


def eval_boxes_transform(frames: np.ndarray, boxes: np.ndarray, *, short_side: int, crop: int | None):
    """Short side to `short_side`, then the centre `crop` square (val) or the whole frame
    (`crop` None: test). Returns (uint8 [3,N,H,W], float32 [R,4] pixels)."""
    import torch

    from avsf.data.transforms import channels_first, resized_window, scaled_size, source_window, to_tensor_frames
    from torchvision.transforms.v2 import functional as TF

    x = to_tensor_frames(frames)
    src_h, src_w = x.shape[-2], x.shape[-1]
    if crop is None:
        h, w = scaled_size(src_h, src_w, short_side)
        x = TF.resize(x, [h, w], antialias=True)
        b = map_boxes(boxes, src_h=src_h, src_w=src_w, y0=0, x0=0, win_h=src_h, win_w=src_w, out_h=h, out_w=w)
    else:
        h, w = scaled_size(src_h, src_w, max(short_side, crop))
        top, left = max(0, (h - crop) // 2), max(0, (w - crop) // 2)
        x = resized_window(x, top=top, left=left, crop=crop, scaled=(h, w))
        y0, x0, win_h, win_w = source_window(src_h, src_w, top=top, left=left, crop=crop, scaled=(h, w))
        b = map_boxes(boxes, src_h=src_h, src_w=src_w, y0=y0, x0=x0, win_h=win_h, win_w=win_w, out_h=crop, out_w=crop)
    return channels_first(x), torch.from_numpy(b)


def detection_collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch detection samples: uint8 frames stacked (padded with black at the right and bottom to the
    largest in the batch), boxes concatenated with their batch index -> "boxes" [R, 5], labels
    -> "label" [R, K], plus "box_item" [R] and "box_slot" [R]."""
    import torch
    import torch.nn.functional as F
    from torch.utils.data import default_collate

    per_box = ("boxes", "label")
    out: dict[str, Any] = {}
    for key in ("slow", "fast"):
        if key in samples[0]:
            h = max(s[key].shape[-2] for s in samples)
            w = max(s[key].shape[-1] for s in samples)
            out[key] = torch.stack([F.pad(s[key], (0, w - s[key].shape[-1], 0, h - s[key].shape[-2])) for s in samples])
    rest = [{k: v for k, v in s.items() if k not in per_box and k not in ("slow", "fast")} for s in samples]
    out.update(default_collate(rest))
    out["boxes"] = torch.cat([torch.cat([torch.full((len(s["boxes"]), 1), float(i)), s["boxes"].float()], 1)
                              for i, s in enumerate(samples)])
    out["label"] = torch.cat([s["label"] for s in samples])
    out["box_item"] = torch.cat([torch.full((len(s["boxes"]),), int(s["item_index"]), dtype=torch.int64)
                                 for s in samples])
    out["box_slot"] = torch.cat([torch.arange(len(s["boxes"]), dtype=torch.int64) for s in samples])
    return out


# --- the dataset -----------------------------------------------------------------------------------------
def build(cfg, split: str, root: Path):
    """The AVA dataset of `split` (raises UserError listing every bad line)."""
    d = cfg.data
    s = read_split(root=root, split=split, version=d.ava_version, annotation_dir_=d.ava_annotation_dir,
                   proposal_threshold=d.ava_proposal_threshold, train_proposals=d.ava_train_proposals,
                   test_boxes=d.ava_test_boxes)
    if s.bad_lines:
        raise UserError(format_bad_lines(s.bad_lines, what=f"the AVA {split} annotations ({Path(s.files['gt']).parent})"))
    if not s.keyframes:
        raise UserError(f"AVA {split}: no keyframe with a box to use in {s.files['gt']} "
                        f"(stats: {s.stats}); check the files and data.ava_test_boxes / data.ava_proposal_threshold")
    return AVADataset(s, cfg=cfg, split=split)


class AVADataset(AVClipDataset):
    """Keyframe clips of one AVA split with their person boxes (see the module docstring).

    ``len`` = keyframes with at least one box; ``groundtruth``, ``excluded`` and
    ``keyframes`` feed the evaluator (:class:`avsf.engine.tasks.detect.DetectionTask`)."""

    collate = staticmethod(detection_collate)  # a variable number of boxes per clip (the loader asks for it)

    def __init__(self, s: AVASplit, *, cfg, split: str):
        used = sorted({kf.video for kf in s.keyframes})
        records = [VideoRecord(path=s.videos[v], name=v) for v in used]
        listing = SplitListing(records=records, bad_lines=s.bad_lines, num_classes=len(s.class_ids),
                               class_names=s.class_names, multi_label=True, split_file=s.files["gt"])
        super().__init__(listing, cfg=cfg, split=split, dataset_name="ava")
        self.views = 1
        self.ava = s
        index = {r.name: i for i, r in enumerate(self.records)}  # videos that passed the probe
        self.keyframes = [kf for kf in s.keyframes if kf.video in index]
        self._video_index = [index[kf.video] for kf in self.keyframes]
        self.groundtruth, self.excluded = s.groundtruth, s.excluded
        if cfg.data.limit_videos:  # a subset is scored against its own videos' boxes only
            chosen = {r.name for r in evenly_spaced(records, cfg.data.limit_videos)}
            self.groundtruth = [g for g in s.groundtruth if g[0][0] in chosen]
            self.excluded = {key for key in s.excluded if key[0] in chosen}
        self.class_ids = s.class_ids
        self.stats.update({f"ava_{k}": v for k, v in s.stats.items()})
        self.stats["keyframes_used"] = len(self.keyframes)
        log.info("ava %s: %s", split, ", ".join(f"{k} {v}" for k, v in s.stats.items()))

    def __len__(self) -> int:
        return len(self.keyframes)

    def video_of(self, item: int) -> int:
        return self._video_index[item]

    def clip_plan(self, item: int, attempt: int = 0):
        from avsf.data import sampling

        rng = sampling.sample_rng(self.cfg.seed, self.epoch, item, attempt)
        kf = self.keyframes[item]
        centre = kf.timestamp - self.cfg.data.ava_time_offset
        return rng, centre - self.geometry.span_s / 2, 0, 0

    def _load(self, item: int, attempt: int) -> dict[str, Any]:
        import torch

        from avsf.data.decode import open_media
        from avsf.data.transforms import pack_pathways

        cfg, d = self.cfg, self.cfg.data
        kf = self.keyframes[item]
        video = self._video_index[item]
        record = self.records[video]
        rng, start, _, _ = self.clip_plan(item, attempt)
        sample: dict[str, Any] = {}
        container = open_media(record.path)
        try:
            frames, waveform, pad = self._decode(record, container, start=start)
            if self.split == "train":
                clip, boxes = train_boxes_transform(frames, kf.boxes, rng=rng, jitter=tuple(d.train_jitter),
                                                    crop=d.train_crop, flip=d.random_flip)
            else:
                clip, boxes = eval_boxes_transform(frames, kf.boxes, short_side=d.test_short_side,
                                                   crop=d.test_crop if self.split == "val" else None)
            sample["slow"], sample["fast"] = pack_pathways(clip, alpha=self.geometry.alpha)
            sample.update(self._audio_fields(waveform, video=video, container=container, record=record,
                                             start=start, rng=rng))
        finally:
            container.close()
        self.check_sound(video, waveform, pad, start=start)
        sample["boxes"] = boxes
        sample["label"] = torch.from_numpy(kf.labels.copy())
        sample["has_audio"] = bool(self.audio_flags[video])
        sample["audio_pad"] = torch.tensor(pad if waveform is not None else 1.0, dtype=torch.float32)
        sample["video_index"] = torch.tensor(video, dtype=torch.int64)
        sample["view_index"] = torch.tensor(0, dtype=torch.int64)
        sample["item_index"] = torch.tensor(item, dtype=torch.int64)
        return sample
