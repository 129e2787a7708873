"""Dataset formats: one reader per format, one dataset class for all (see base.py).

`build_dataset(cfg, split)` picks the reader by `cfg.data.dataset`; `list_split_file` reads a
split file on its own (for `avsf check-data`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from avsf.config import ConfigError
from avsf.data.datasets import charades, epic, kinetics, ucf_hmdb
from avsf.data.datasets.records import BadLine, SplitListing, VideoRecord
from avsf.errors import UserError

def _read_split_ava(**kw) -> SplitListing:
    from avsf.data.datasets import ava  # noqa: PLC0415 (imports torch)

    return ava.read_split_listing(**kw)


READERS: dict[str, Callable[..., SplitListing]] = {
    "kinetics": kinetics.read_split,
    "kinetics_sounds": kinetics.read_split_sounds,
    "synthetic": kinetics.read_split,
    "charades": charades.read_split,
    "epic": epic.read_split,
    "ucf101": ucf_hmdb.read_split_ucf101,
    "hmdb51": ucf_hmdb.read_split_hmdb51,
    "kinetics600": kinetics.read_split,  # A.2's audio-only row: Kinetics-400's format
    "ava": _read_split_ava,  # box CSVs + label map; avsf.data.datasets.ava
}
SPLITS = ("train", "val", "test")


def dataset_root(cfg) -> Path:
    """The folder the dataset lives in: `data.root`, or the built-in synthetic dataset; a
    derived view of the built-in data that `data.root` names is generated on first use."""
    d = cfg.data
    if d.root:
        from avsf.data.synthetic import GENERATOR_VERSION
        from avsf.data.synthetic.views import ensure_synthetic_view, view_kind

        if kind := view_kind(d):  # EPIC / Charades / UCF101 / HMDB51 / pretraining view of the built-in data
            check_synthetic_version(cfg, GENERATOR_VERSION)
            return ensure_synthetic_view(kind=kind, synthetic_root=d.synthetic_root, scale=d.synthetic_scale,
                                         seed=d.synthetic_seed)
        root = Path(d.root).expanduser()
        if not root.is_dir():
            raise UserError(f"dataset root {root} does not exist or is not a folder; set data.root to the "
                            f"dataset folder (or leave it empty for the built-in synthetic data)")
        return root
    if d.dataset == "ava":  # the built-in synthetic AVA-format detection data
        from avsf.data.synthetic.detection import ensure_synthetic_ava

        return Path(ensure_synthetic_ava(d.synthetic_root, d.synthetic_scale, d.synthetic_seed))
    if d.dataset != "synthetic":
        raise UserError(f"data.dataset={d.dataset!r} needs data.root: the folder that holds its videos")
    from avsf.data.synthetic import GENERATOR_VERSION, ensure_synthetic

    check_synthetic_version(cfg, GENERATOR_VERSION)
    return Path(ensure_synthetic(d.synthetic_root, d.synthetic_scale, d.synthetic_seed))


def check_synthetic_version(cfg, current: int) -> None:
    """A config made for another version of the built-in dataset cannot be trained on this one."""
    wanted = cfg.data.synthetic_version
    if wanted and wanted != current:
        raise UserError(f"this run's config asks for version {wanted} of the built-in dataset, but this avsf "
                        f"generates version {current}; rebuild the config (rerun the notebook or `avsf sweep`, "
                        f"or pass --set data.synthetic_version={current})")


def build_dataset(cfg, split: str):
    """The dataset of one split (docs/INTERFACES.md, "Data")."""
    from avsf.data.datasets.base import AVClipDataset

    if cfg.data.dataset not in READERS:
        raise ConfigError(f"data.dataset={cfg.data.dataset!r} is not allowed; choose one of {', '.join(READERS)}")
    if split not in SPLITS:
        raise UserError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    root = dataset_root(cfg)
    if cfg.data.dataset == "ava":
        from avsf.data.datasets import ava

        return ava.build(cfg, split, root)
    split_dir = Path(cfg.data.split_dir).expanduser() if cfg.data.split_dir else root
    listing = READERS[cfg.data.dataset](root=root, split_dir=split_dir, split=split)
    if not listing.records:
        raise UserError(f"{listing.split_file} lists no usable video ({len(listing.bad_lines)} lines did not parse); "
                        f"run `avsf check-data` on it")
    dataset = AVClipDataset(listing, cfg=cfg, split=split, dataset_name=cfg.data.dataset)
    if dataset.num_videos == 0:
        st = dataset.stats
        raise UserError(f"none of the {st['listed']} videos in {listing.split_file} is usable ({st['found']} found, "
                        f"{st['readable']} readable, {st['no_video']} without video); run "
                        f"`avsf check-data --dataset {cfg.data.dataset} --root {root}` to see why")
    return dataset


def list_split_file(*, dataset: str, root: str | os.PathLike, split_file: str | os.PathLike | None = None,
                    split: str = "train", split_dir: str | os.PathLike | None = None) -> tuple[list[VideoRecord], list[BadLine]]:
    """The records and unparsable lines of one split file (`split_file`), or of a split of a
    dataset folder in its format (`split`)."""
    if dataset not in READERS:
        raise UserError(f"unknown dataset format {dataset!r}; choose one of {', '.join(READERS)}")
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"dataset root {root} does not exist or is not a folder")
    if split_file is not None:
        path = Path(split_file)
        if not path.is_file():
            raise UserError(f"split file not found: {path}")
        if dataset in ("kinetics", "kinetics_sounds", "synthetic"):
            return kinetics.read_csv(path, root=root, classnames=kinetics.read_classnames(path.parent))
        if dataset == "epic":
            return epic.read_csv(path, root=root)
        if dataset == "charades":
            return charades.read_csv(path, root=root)
        raise UserError(f"{dataset} has several split files; give --split and --split-dir instead of --csv"
                        + (" (for ava: --split-dir is the annotation folder)" if dataset == "ava" else ""))
    listing = READERS[dataset](root=root, split_dir=Path(split_dir) if split_dir else root, split=split)
    return listing.records, listing.bad_lines
