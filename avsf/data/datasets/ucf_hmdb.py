"""UCF101 and HMDB51 with their official split files (fold 1 unless `fold` says otherwise).

UCF101: `classInd.txt` ("1 ApplyEyeMakeup"), `trainlist0{fold}.txt`
("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1") and `testlist0{fold}.txt` (path only; the
class is the folder). HMDB51: `{class}_test_split{fold}.txt` per class with lines
"video.avi 1|2|0" (1 train, 2 test, 0 unused). Videos: `{root}/{class}/{file}`.
val and test both read the test list (these datasets have no separate validation split).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from avsf.data.datasets.records import BadLine, SplitListing, VideoRecord, require_file
from avsf.errors import UserError

FOLD = 1


def read_ucf_class_index(path: Path) -> tuple[dict[str, int], list[BadLine]]:
    classes, bad = {}, []
    for no, raw in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not raw.strip():
            continue
        parts = raw.split()
        if len(parts) != 2 or not parts[0].isdigit():
            bad.append(BadLine(str(path), no, raw, "expected `index ClassName`"))
            continue
        classes[parts[1]] = int(parts[0]) - 1  # the file counts from 1
    return classes, bad


def read_ucf_list(path: Path, *, root: Path, classes: dict[str, int]) -> tuple[list[VideoRecord], list[BadLine]]:
    records, bad = [], []
    for no, raw in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not raw.strip():
            continue
        parts = raw.split()
        rel = parts[0]
        folder = rel.split("/")[0] if "/" in rel else ""
        if folder not in classes:
            bad.append(BadLine(str(path), no, raw, f"class folder {folder!r} is not in classInd.txt"))
            continue
        label = classes[folder]
        if len(parts) >= 2:
            if not parts[1].isdigit() or int(parts[1]) - 1 != label:
                bad.append(BadLine(str(path), no, raw, f"label {parts[1]!r} does not match class {folder} ({label + 1})"))
                continue
        records.append(VideoRecord(path=str(root / rel), label=label, name=rel))
    return records, bad


def read_split_ucf101(*, root: str | os.PathLike, split_dir: str | os.PathLike, split: str,
                      fold: int = FOLD) -> SplitListing:
    split_dir, root = Path(split_dir), Path(root)
    hint = "use the official UCF101 split files (ucfTrainTestlist) in data.split_dir"
    class_file = require_file(split_dir / "classInd.txt", what="UCF101 class index", hint=hint)
    classes, bad = read_ucf_class_index(class_file)
    name = f"trainlist0{fold}.txt" if split == "train" else f"testlist0{fold}.txt"
    list_file = require_file(split_dir / name, what=f"UCF101 {split} list", hint=hint)
    records, bad_list = read_ucf_list(list_file, root=root, classes=classes)
    names = [""] * (max(classes.values()) + 1 if classes else 0)
    for n, i in classes.items():
        names[i] = n
    return SplitListing(records=records, bad_lines=bad + bad_list, num_classes=len(names), class_names=names,
                        split_file=str(list_file))


_HMDB_FILE = re.compile(r"^(?P<cls>.+)_test_split(?P<fold>\d)\.txt$")


def read_split_hmdb51(*, root: str | os.PathLike, split_dir: str | os.PathLike, split: str,
                      fold: int = FOLD) -> SplitListing:
    split_dir, root = Path(split_dir), Path(root)
    files = sorted(p for p in split_dir.glob(f"*_test_split{fold}.txt") if _HMDB_FILE.match(p.name))
    if not files:
        raise UserError(f"HMDB51 split files not found: looked for {split_dir}/*_test_split{fold}.txt; "
                        f"use the official testTrainMulti_7030_splits in data.split_dir")
    names = [_HMDB_FILE.match(p.name).group("cls") for p in files]
    want = "1" if split == "train" else "2"
    records, bad = [], []
    for label, (name, path) in enumerate(zip(names, files)):
        for no, raw in enumerate(path.read_text(errors="replace").splitlines(), start=1):
            if not raw.strip():
                continue
            parts = raw.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                bad.append(BadLine(str(path), no, raw, "expected `video.avi 0|1|2`"))
                continue
            if parts[1] == want:
                records.append(VideoRecord(path=str(root / name / parts[0]), label=label, name=f"{name}/{parts[0]}"))
    return SplitListing(records=records, bad_lines=bad, num_classes=len(names), class_names=names,
                        split_file=str(split_dir / f"*_test_split{fold}.txt"))
