"""Charades in PySlowFast's frame-list format (multi-label, 157 classes).

`{split}.csv` (train.csv; val.csv serves val and test) starts with the header
`original_vido_id video_id frame_id path labels` and lists one frame per line, space
separated; `labels` is a comma-separated list of class indices ("" for none). Frame paths are
relative to the root. Frames are images extracted at 24 fps. The sound, when present, comes
from `{root}/videos/{original_vido_id}.mp4` (Charades_v1_480).

A `vocabulary.json` beside the lists ({"labels": [...]}) sets a smaller class list for
derived views. Training clips take the union of the labels of the frames they cover (as PySlowFast does);
val/test use video-level labels (the union over all frames).
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

from avsf.data.datasets.records import BadLine, SplitListing, VideoRecord, read_vocabulary, require_file, resolve

NUM_CLASSES = 157
FRAME_FPS = 24.0
SPLIT_FILES = {"train": "train.csv", "val": "val.csv", "test": "val.csv"}
HEADER = ("original_vido_id", "video_id", "frame_id", "path", "labels")


def _parse_labels(text: str) -> tuple[int, ...]:
    text = text.strip().strip('"')
    if not text:
        return ()
    return tuple(int(x) for x in text.split(",") if x.strip())


def read_csv(csv_path: str | os.PathLike, *, root: str | os.PathLike,
             num_classes: int = NUM_CLASSES) -> tuple[list[VideoRecord], list[BadLine]]:
    frames: dict[str, list[tuple[int, str, tuple[int, ...]]]] = defaultdict(list)
    bad = []
    lines = Path(csv_path).read_text(errors="replace").splitlines()
    if not lines or tuple(lines[0].split()[:5]) != HEADER:
        return [], [BadLine(str(csv_path), 1, lines[0] if lines else "", f"header should be {' '.join(HEADER)}")]
    for no, raw in enumerate(lines[1:], start=2):
        if not raw.strip():
            continue
        parts = raw.split()
        if len(parts) not in (4, 5):
            bad.append(BadLine(str(csv_path), no, raw, "expected 5 space-separated fields: " + " ".join(HEADER)))
            continue
        try:
            labels = _parse_labels(parts[4] if len(parts) == 5 else "")
            frame_id = int(parts[2])
        except ValueError as e:
            bad.append(BadLine(str(csv_path), no, raw, f"frame id or labels not integers ({e})"))
            continue
        if any(not 0 <= x < num_classes for x in labels):
            bad.append(BadLine(str(csv_path), no, raw, f"label outside 0..{num_classes - 1}"))
            continue
        frames[parts[0]].append((frame_id, resolve(root, parts[3]), labels))
    records = []
    for vid, rows in frames.items():
        rows.sort()
        union = tuple(sorted({x for _, _, labels in rows for x in labels}))
        records.append(VideoRecord(path=str(Path(rows[0][1]).parent), label=union, name=vid,
                                   frames=tuple(p for _, p, _ in rows),
                                   frame_labels=tuple(labels for _, _, labels in rows), fps=FRAME_FPS,
                                   audio_path=str(Path(root) / "videos" / f"{vid}.mp4")))
    return records, bad


def read_split(*, root: str | os.PathLike, split_dir: str | os.PathLike, split: str) -> SplitListing:
    csv_path = require_file(Path(split_dir) / SPLIT_FILES[split], what=f"Charades {split} frame list",
                            hint="use PySlowFast's frame lists (data.split_dir) with frames under data.root")
    labels = (read_vocabulary(split_dir) or {}).get("labels")
    names = [str(x) for x in labels] if labels else [f"c{i:03d}" for i in range(NUM_CLASSES)]
    records, bad = read_csv(csv_path, root=root, num_classes=len(names))
    return SplitListing(records=records, bad_lines=bad, num_classes=len(names), class_names=names,
                        multi_label=True, split_file=str(csv_path))
