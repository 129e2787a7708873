"""Kinetics-400/600 (PySlowFast csv: one `path label` per line) and Kinetics-Sounds.

Split files are `{split}.csv` in the split folder (default: the root); paths are relative to
the root. The label is a class index, or a class name when `classnames.json` ({"name":
index}) is present. Separators: whitespace or a comma; the label is the last field, so
paths may contain spaces.
"""

from __future__ import annotations

import os
from pathlib import Path

from avsf.data.datasets.records import (BadLine, SplitListing, VideoRecord, read_json_beside_splits,
                                        require_file, resolve)
from avsf.errors import UserError

# Appendix B of the paper: the 32 Kinetics-Sounds classes still in Kinetics-400, in its order
KINETICS_SOUNDS_CLASSES = (
    "blowing nose", "blowing out candles", "bowling", "chopping wood", "dribbling basketball",
    "laughing", "mowing lawn", "playing accordion", "playing bagpipes", "playing bass guitar",
    "playing clarinet", "playing drums", "playing guitar", "playing harmonica",
    "playing keyboard", "playing organ", "playing piano", "playing saxophone",
    "playing trombone", "playing trumpet", "playing violin", "playing xylophone",
    "ripping paper", "shoveling snow", "shuffling cards", "singing", "stomping grapes",
    "strumming guitar", "tap dancing", "tapping guitar", "tapping pen", "tickling",
)
SPLIT_FILES = {"train": "train.csv", "val": "val.csv", "test": "test.csv"}


def read_classnames(split_dir: str | os.PathLike) -> dict[str, int] | None:
    """`classnames.json` of a Kinetics-format folder ({"name": index}), or None if absent."""
    names = read_json_beside_splits(split_dir, "classnames.json", expect="a map of class names to indices")
    if names is None:
        return None
    if not isinstance(names, dict) or not all(isinstance(v, int) for v in names.values()):
        raise UserError(f"{Path(split_dir) / 'classnames.json'} should map class names to integer indices, "
                        f"e.g. {{\"abseiling\": 0}}")
    return {str(k): int(v) for k, v in names.items()}


def _split_line(line: str) -> tuple[str, str] | None:
    """(path, label) of one line, or None if it has no separator."""
    for sep in (None, ","):
        parts = line.rsplit(sep, 1)
        if len(parts) == 2 and parts[0].strip() and parts[1].strip():
            return parts[0].strip(), parts[1].strip()
    return None


def read_csv(csv_path: str | os.PathLike, *, root: str | os.PathLike,
             classnames: dict[str, int] | None) -> tuple[list[VideoRecord], list[BadLine]]:
    """Every `path label` line of a Kinetics-format csv; lines that do not parse are returned
    as BadLine (all of them, not just the first)."""
    records, bad = [], []
    text = Path(csv_path).read_text(errors="replace")
    for no, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parsed = _split_line(line)
        if parsed is None:
            bad.append(BadLine(str(csv_path), no, raw, "expected `path label` (label: class index or name)"))
            continue
        rel, label_text = parsed
        try:
            label = int(label_text)
        except ValueError:
            if classnames and label_text in classnames:
                label = classnames[label_text]
            else:
                known = "not in classnames.json" if classnames else "not an integer (and no classnames.json to look names up)"
                bad.append(BadLine(str(csv_path), no, raw, f"label {label_text!r} is {known}"))
                continue
        if label < 0:
            bad.append(BadLine(str(csv_path), no, raw, f"label {label} is negative"))
            continue
        records.append(VideoRecord(path=resolve(root, rel), label=label, name=rel))
    return records, bad


def _num_classes(split_dir: Path, root: Path, classnames: dict[str, int] | None) -> int:
    if classnames:
        return max(classnames.values()) + 1
    # no class list: the largest label over every split file present (so splits agree)
    top = -1
    for name in SPLIT_FILES.values():
        if (split_dir / name).is_file():
            recs, _ = read_csv(split_dir / name, root=root, classnames=None)
            top = max([top] + [int(r.label) for r in recs])
    return top + 1


def read_split(*, root: str | os.PathLike, split_dir: str | os.PathLike, split: str) -> SplitListing:
    root, split_dir = Path(root), Path(split_dir)
    csv_path = require_file(split_dir / SPLIT_FILES[split], what=f"Kinetics {split} list",
                            hint="write `path label` lines there, or point data.root / data.split_dir at the dataset "
                                 "(for the built-in data run `avsf synth`)")
    classnames = read_classnames(split_dir)
    records, bad = read_csv(csv_path, root=root, classnames=classnames)
    num_classes = _num_classes(split_dir, root, classnames)
    names = [str(i) for i in range(num_classes)]
    for name, idx in (classnames or {}).items():
        names[idx] = name
    for r in records:
        if int(r.label) >= num_classes:
            bad.append(BadLine(str(csv_path), -1, r.name, f"label {r.label} >= {num_classes} classes in classnames.json"))
    records = [r for r in records if int(r.label) < num_classes]
    return SplitListing(records=records, bad_lines=bad, num_classes=num_classes, class_names=names,
                        split_file=str(csv_path))


def read_split_sounds(*, root: str | os.PathLike, split_dir: str | os.PathLike, split: str) -> SplitListing:
    """Kinetics-Sounds: the Kinetics videos of the paper's 32 classes, relabelled 0..31 in the
    appendix's order. Needs classnames.json to find the classes by name."""
    full = read_split(root=root, split_dir=split_dir, split=split)
    classnames = read_classnames(split_dir)
    if not classnames:
        raise UserError(f"Kinetics-Sounds selects classes by name: {Path(split_dir) / 'classnames.json'} is missing; "
                        f"write the Kinetics class names there as {{\"name\": index}}")
    old_to_new = {classnames[name]: i for i, name in enumerate(KINETICS_SOUNDS_CLASSES) if name in classnames}
    if not old_to_new:
        raise UserError(f"none of the 32 Kinetics-Sounds classes (e.g. {KINETICS_SOUNDS_CLASSES[0]!r}) is in "
                        f"{Path(split_dir) / 'classnames.json'}; is this a Kinetics-400 folder?")
    records = []
    for r in full.records:
        if int(r.label) in old_to_new:
            r.label = old_to_new[int(r.label)]
            records.append(r)
    return SplitListing(records=records, bad_lines=full.bad_lines, num_classes=len(KINETICS_SOUNDS_CLASSES),
                        class_names=list(KINETICS_SOUNDS_CLASSES), split_file=full.split_file)
