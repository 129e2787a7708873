"""What a dataset format reader returns: the videos of one split and the lines it rejected."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from avsf.errors import UserError


@dataclass
class VideoRecord:
    """One video (or one segment of a video) of a split.

    path: the media file (absolute). For image-sequence datasets (Charades) it names the
        video and `frames` lists the image files; `audio_path` is a media file with its sound.
    label: class index; a tuple of indices for multi-label datasets; -1 when unlabelled.
    window: (start_s, end_s) of a segment (EPIC); None = the whole file.
    verb, noun: EPIC classes (-1 elsewhere).
    frame_labels: per-frame label tuples of an image sequence (Charades training labels).
    fps: frame rate of an image sequence.
    """

    path: str
    label: int | tuple[int, ...] = -1
    window: tuple[float, float] | None = None
    verb: int = -1
    noun: int = -1
    frames: tuple[str, ...] = ()
    frame_labels: tuple[tuple[int, ...], ...] = ()
    fps: float = 0.0
    audio_path: str = ""
    name: str = ""  # the id the split file uses (for reports)


@dataclass
class BadLine:
    """A split-file line that does not parse: which file, which line, what was wrong."""

    file: str
    line_no: int
    text: str
    reason: str


@dataclass
class SplitListing:
    """One split as a format reader sees it."""

    records: list[VideoRecord]
    bad_lines: list[BadLine] = field(default_factory=list)
    num_classes: int = 0
    class_names: list[str] = field(default_factory=list)
    multi_label: bool = False
    split_file: str = ""
    num_verbs: int = 0  # EPIC
    num_nouns: int = 0


def read_json_beside_splits(split_dir: str | os.PathLike, name: str, *, expect: str) -> object | None:
    """The JSON file `name` in a dataset's split folder, or None if absent; `expect` says
    what it should hold, for the error when it does not parse."""
    import json

    path = Path(split_dir) / name
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise UserError(f"{path} is not valid JSON ({e}); it should hold {expect}") from e


def read_vocabulary(split_dir: str | os.PathLike) -> dict | None:
    """`vocabulary.json` beside the split files, if any: the class names of a dataset view
    that uses fewer classes than the real dataset (e.g. the synthetic EPIC and Charades views
    of the built-in data: {"verbs": [...], "nouns": [...]} or {"labels": [...]})."""
    vocab = read_json_beside_splits(split_dir, "vocabulary.json", expect="class-name lists")
    if vocab is not None and not isinstance(vocab, dict):
        raise UserError(f"{Path(split_dir) / 'vocabulary.json'} should be a JSON object with class-name lists")
    return vocab


def require_file(path: Path, *, what: str, hint: str) -> Path:
    """`path` if it is a file, else a UserError naming where it looked and what to do."""
    if not path.is_file():
        raise UserError(f"{what} not found: looked for {path}; {hint}")
    return path


def resolve(root: str | os.PathLike, rel: str) -> str:
    """A split file's path, relative to the dataset root unless absolute."""
    p = Path(rel)
    return str(p if p.is_absolute() else Path(root) / p)


def records_paths(records: list[VideoRecord]) -> list[str]:
    """Every media file a list of records needs (video files, or frames' audio files)."""
    out = []
    for r in records:
        if r.frames:  # image sequence: its sound file if there is one, else its first frame
            out.append(r.audio_path if r.audio_path and os.path.exists(r.audio_path) else r.frames[0])
        else:
            out.append(r.path)
    return out
