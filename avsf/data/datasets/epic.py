"""EPIC-Kitchens-55 action segments (the official action-label csv).

Columns used: participant_id, video_id, start_timestamp, stop_timestamp (HH:MM:SS.ff),
verb_class, noun_class. Each row is one segment; clips are sampled inside it. Split files:
`EPIC_train_action_labels.csv` for train and `EPIC_val_action_labels.csv` (a held-out part of
the training set, same columns) for val and test. Videos: `{root}/{participant}/{video}.MP4`
(or `{root}/{video}.MP4`; `.mp4` also accepted). A `vocabulary.json` beside the csv
({"verbs": [...], "nouns": [...]}) sets smaller verb/noun counts for derived views.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from avsf.data.datasets.records import BadLine, SplitListing, VideoRecord, read_vocabulary, require_file

NUM_VERBS, NUM_NOUNS = 125, 352
SPLIT_FILES = {"train": "EPIC_train_action_labels.csv", "val": "EPIC_val_action_labels.csv",
               "test": "EPIC_val_action_labels.csv"}
REQUIRED = ("video_id", "start_timestamp", "stop_timestamp", "verb_class", "noun_class")


def parse_timestamp(text: str) -> float:
    """'HH:MM:SS.ff' (or 'MM:SS.ff', or seconds) -> seconds."""
    parts = text.strip().split(":")
    if not 1 <= len(parts) <= 3:
        raise ValueError(f"bad timestamp {text!r}")
    seconds = 0.0
    for p in parts:
        seconds = seconds * 60 + float(p)
    return seconds


def video_path(root: Path, participant: str, video_id: str) -> str:
    candidates = [root / participant / f"{video_id}{ext}" for ext in (".MP4", ".mp4")] + \
                 [root / f"{video_id}{ext}" for ext in (".MP4", ".mp4")]
    for c in candidates:
        if c.exists():
            return str(c)
    return str(candidates[0])  # reported as missing under the canonical name


def read_csv(csv_path: str | os.PathLike, *, root: str | os.PathLike) -> tuple[list[VideoRecord], list[BadLine]]:
    root = Path(root)
    records, bad = [], []
    with open(csv_path, newline="", errors="replace") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            return [], [BadLine(str(csv_path), 1, ",".join(reader.fieldnames or []),
                                f"header lacks column(s) {', '.join(missing)}")]
        for row in reader:
            no = reader.line_num
            try:
                start, stop = parse_timestamp(row["start_timestamp"]), parse_timestamp(row["stop_timestamp"])
                verb, noun = int(row["verb_class"]), int(row["noun_class"])
            except (ValueError, TypeError, AttributeError) as e:
                bad.append(BadLine(str(csv_path), no, ",".join(str(v) for v in row.values()), str(e)))
                continue
            if stop <= start:
                bad.append(BadLine(str(csv_path), no, ",".join(str(v) for v in row.values()),
                                   f"stop {stop:.2f} s is not after start {start:.2f} s"))
                continue
            if not (0 <= verb < NUM_VERBS and 0 <= noun < NUM_NOUNS):
                bad.append(BadLine(str(csv_path), no, ",".join(str(v) for v in row.values()),
                                   f"verb {verb} / noun {noun} outside 0..{NUM_VERBS - 1} / 0..{NUM_NOUNS - 1}"))
                continue
            video_id = row["video_id"].strip()
            participant = (row.get("participant_id") or video_id.split("_")[0]).strip()
            records.append(VideoRecord(path=video_path(root, participant, video_id), label=verb * NUM_NOUNS + noun,
                                       window=(start, stop), verb=verb, noun=noun,
                                       name=row.get("uid") or f"{video_id}@{start:.2f}"))
    return records, bad


def read_split(*, root: str | os.PathLike, split_dir: str | os.PathLike, split: str) -> SplitListing:
    csv_path = require_file(Path(split_dir) / SPLIT_FILES[split], what=f"EPIC-Kitchens {split} labels",
                            hint="put the official action-label csv there (data.split_dir), videos under data.root")
    records, bad = read_csv(csv_path, root=root)
    vocab = read_vocabulary(split_dir) or {}
    verbs, nouns = len(vocab.get("verbs", [])) or NUM_VERBS, len(vocab.get("nouns", [])) or NUM_NOUNS
    return SplitListing(records=records, bad_lines=bad, num_classes=NUM_VERBS * NUM_NOUNS,
                        class_names=[], split_file=str(csv_path), num_verbs=verbs, num_nouns=nouns)
