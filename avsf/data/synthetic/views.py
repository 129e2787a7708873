"""Derived views of the built-in dataset in other datasets' formats: EPIC-Kitchens, Charades,
UCF101, HMDB51 and a Kinetics-format pretraining subset.

Each view reuses the built-in clips (links, or extracted frames for Charades) and is written on
first use, under a file lock, atomically, beside the data it comes from::

    <synthetic_root>/views/<kind>-<scale>-seed<seed>/   view.json stamps the source and VIEW_VERSION

Nothing in a view is real EPIC, Charades, UCF101 or HMDB51 data: each class name
"<noun> <verb>" gives a clip's verb and noun (:func:`synthetic_vocabulary`), so the numbers say
the pipeline works, not what audio does for those datasets. :func:`prepare_views` builds the
views (and the synthetic AVA data) that a list of run configs reads; the dataset resolution
(:func:`avsf.data.datasets.dataset_root`) builds a missing view a run's config names.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from avsf.data.synthetic.dataset import ensure_synthetic, generate_once, swap_in
from avsf.data.synthetic.detection import ensure_synthetic_ava
from avsf.data.synthetic.workers import run_shared
from avsf.errors import UserError

if TYPE_CHECKING:
    from avsf.config import DataConfig, RunConfig

def synthetic_view_dir(*, kind: str, synthetic_root: str | Path, scale: str) -> Path:
    """Where the synthetic ``kind`` ("epic" or "charades") view of the built-in dataset lives
    (``scale`` names the source: ``smoke-seed0``)."""
    return Path(synthetic_root) / "views" / f"{kind}-{scale}"


VIEW_VERSION = 1  # bump when a view's content changes: cached views are rebuilt


def synthetic_vocabulary(class_names: list[str]) -> tuple[list[str], list[str], list[tuple[int, int]]]:
    """Split each synthetic class name "<noun> <verb>" ("door closing", "six shaking") into a
    noun and a verb: (verbs, nouns, [(verb index, noun index) per class]). Every class of the
    built-in dataset is such a pair, so an EPIC action (verb, noun) is exactly one class."""
    verbs: list[str] = []
    nouns: list[str] = []
    pairs = []
    for name in class_names:
        noun, _, verb = name.partition(" ")
        if not verb:
            raise UserError(f"synthetic class {name!r} is not '<noun> <verb>'; cannot derive a view")
        verbs += [verb] if verb not in verbs else []
        nouns += [noun] if noun not in nouns else []
        pairs.append((verbs.index(verb), nouns.index(noun)))
    return verbs, nouns, pairs


def ensure_synthetic_view(*, kind: str, synthetic_root: str | Path, scale: str, seed: int = 0) -> Path:
    """A derived view of the built-in dataset (``root/<scale>-seed<seed>``, generated first if
    missing), built on first use and returned: as the built-in data, under a file lock
    (:func:`~avsf.data.synthetic.dataset.generate_once`) and atomically (written to a temp
    folder, then :func:`~avsf.data.synthetic.dataset.swap_in`).

    Every view reuses the built-in clips; nothing about them is real data of the format:

    - ``epic``: ``EPIC_{train,val}_action_labels.csv`` with one segment per clip (the whole
      clip), verb_class and noun_class from the class name (:func:`synthetic_vocabulary`);
      videos are links to the clips. The reader's val file (the synthetic test split) serves
      val and test.
    - ``charades``: PySlowFast frame lists (``train.csv``, ``val.csv``) of frames extracted at
      24 fps, each video multi-labelled with its verb and its noun (two of 10-11 + 10 labels);
      ``videos/<id>.mp4`` links give the sound.
    - ``ucf101``, ``hmdb51``: the official split-file formats on a few clips per class;
      ``ssl_pretrain``: a Kinetics-format subset for smoke pretraining (see their writers).
    """
    if kind not in VIEW_WRITERS:
        raise UserError(f"no synthetic view of kind {kind!r}; choose one of {', '.join(VIEW_WRITERS)}")
    source = ensure_synthetic(synthetic_root, scale, seed)
    out = synthetic_view_dir(kind=kind, synthetic_root=synthetic_root, scale=f"{scale}-seed{seed}")
    stamp = {"kind": kind, "view_version": VIEW_VERSION, "source": str(source),
             "source_manifest_mtime": (source / "manifest.json").stat().st_mtime}

    def write(out: Path) -> None:
        tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            VIEW_WRITERS[kind](source, tmp)
            (tmp / "view.json").write_text(json.dumps(stamp, indent=1))  # last: marks the view complete
            swap_in(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    return generate_once(out, complete=lambda out: _view_complete(out, stamp), generate=write)


def view_kind(data: DataConfig) -> str | None:
    """The kind of derived view that ``data`` (a run's data config) reads, or None when its
    ``root`` is not the view of its built-in data (``synthetic_root``, scale and seed)."""
    if not data.root or data.dataset not in ("epic", "charades", "ucf101", "hmdb51", "kinetics"):
        return None
    kind = "ssl_pretrain" if data.dataset == "kinetics" else data.dataset
    scale = f"{data.synthetic_scale}-seed{data.synthetic_seed}"
    if Path(data.root).expanduser() != synthetic_view_dir(kind=kind, synthetic_root=data.synthetic_root, scale=scale):
        return None
    return kind


def _view_complete(out: Path, stamp: dict) -> bool:
    try:
        return json.loads((out / "view.json").read_text()) == stamp
    except (OSError, ValueError):
        return False


def _source_clips(source: Path) -> tuple[list[str], list[dict]]:
    manifest = json.loads((source / "manifest.json").read_text())
    names = [c["name"] for c in sorted(manifest["classes"], key=lambda c: c["index"])]
    return names, manifest["clips"]


# the reader's val file serves val and test: it lists the synthetic test split
_VIEW_SPLITS = {"train": "train", "val": "test"}


def _write_epic_view(source: Path, out: Path) -> None:
    names, clips = _source_clips(source)
    verbs, nouns, pairs = synthetic_vocabulary(names)
    fps = json.loads((source / "manifest.json").read_text())["spec"]["fps"]
    (out / "P01").mkdir()
    for split, src_split in _VIEW_SPLITS.items():
        lines = ["uid,participant_id,video_id,narration,start_timestamp,stop_timestamp,"
                 "verb,verb_class,noun,noun_class"]
        for uid, clip in enumerate(c for c in clips if c["split"] == src_split):
            video_id = Path(clip["path"]).stem
            link = out / "P01" / f"{video_id}.mp4"
            if not link.exists():
                link.symlink_to(source / clip["path"])
            verb, noun = pairs[clip["label"]]
            stop = clip["num_frames"] / fps
            lines.append(f"{uid},P01,{video_id},{verbs[verb]} {nouns[noun]},00:00:00.00,"
                         f"{_timestamp(stop)},{verbs[verb]},{verb},{nouns[noun]},{noun}")
        (out / f"EPIC_{split}_action_labels.csv").write_text("\n".join(lines) + "\n")
    (out / "vocabulary.json").write_text(json.dumps({"verbs": verbs, "nouns": nouns}, indent=1))


def _timestamp(seconds: float) -> str:
    # floor to hundredths so the segment never ends after the clip
    hundredths = int(seconds * 100)
    h, rem = divmod(hundredths, 360000)
    m, rem = divmod(rem, 6000)
    return f"{h:02d}:{m:02d}:{rem // 100:02d}.{rem % 100:02d}"


CHARADES_FPS = 24.0


def _write_charades_view(source: Path, out: Path) -> None:
    names, clips = _source_clips(source)
    verbs, nouns, pairs = synthetic_vocabulary(names)
    (out / "videos").mkdir()
    listed: dict[str, list[tuple[str, int, str]]] = {}  # split -> (video id, index, labels)
    jobs: list[tuple[str, str]] = []
    for split, src_split in _VIEW_SPLITS.items():
        listed[split] = []
        for index, clip in enumerate(c for c in clips if c["split"] == src_split):
            vid = Path(clip["path"]).stem
            verb, noun = pairs[clip["label"]]
            (out / "videos" / f"{vid}.mp4").symlink_to(source / clip["path"])
            listed[split].append((vid, index, f"{verb},{len(verbs) + noun}"))
            jobs.append((str(source / clip["path"]), str(out / "frames" / vid)))
    workers = max(1, min(2, os.cpu_count() or 1, len(jobs)))
    counts = dict(run_shared("avsf.data.synthetic.views:extract_charades_frames", jobs, kwargs={},
                             workers=workers, work=out / ".work"))
    for split, videos in listed.items():
        lines = ["original_vido_id video_id frame_id path labels"]
        for vid, index, labels in videos:
            lines += [f"{vid} {index} {k} frames/{vid}/{vid}-{k + 1:06d}.jpg {labels}"
                      for k in range(counts[str(out / "frames" / vid)])]
        (out / f"{split}.csv").write_text("\n".join(lines) + "\n")
    (out / "vocabulary.json").write_text(json.dumps({"labels": verbs + nouns}, indent=1))


def extract_charades_frames(jobs: list) -> list[tuple[str, int]]:
    """Each (video file, frame folder): the video's frames resampled to CHARADES_FPS, as
    ``<folder>/<id>-000001.jpg`` ... (Charades' RGB frame layout); (folder, frames written) each.
    A task of :func:`avsf.data.synthetic.workers.run_shared`."""
    import av  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415

    written = []
    for video, folder in jobs:
        frame_dir = Path(folder)
        frame_dir.mkdir(parents=True)
        with av.open(video) as container:
            stream = container.streams.video[0]
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
            fps = float(stream.average_rate or 30)
        count = int(len(frames) / fps * CHARADES_FPS)
        for k in range(count):
            src = min(int(round(k / CHARADES_FPS * fps)), len(frames) - 1)
            Image.fromarray(frames[src]).save(frame_dir / f"{frame_dir.name}-{k + 1:06d}.jpg", quality=90)
        written.append((folder, count))
    return written


# --- synthetic UCF101 / HMDB51 views (official split-file formats) ------------
# Small on purpose (the transfer runs are many): UCF101 keeps every class, HMDB51 every other class;
# per class the first SSL_VIEW_TRAIN clips of the synthetic train split train and the first
# SSL_VIEW_TEST of its test split test (HMDB51 also lists SSL_VIEW_UNUSED val clips as 0, unused).
# The pretraining (synthetic train split, no labels) saw the training clips: like Kinetics and UCF.
SSL_VIEW_TRAIN, SSL_VIEW_TEST, SSL_VIEW_UNUSED = 4, 2, 2


def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split())


def _clips_by_class(clips: list[dict], split: str) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for c in clips:
        if c["split"] == split:
            out.setdefault(c["label"], []).append(c)
    return out


def _write_ucf101_view(source: Path, out: Path) -> None:
    """classInd.txt ("1 DoorClosing"), trainlist01.txt ("DoorClosing/v_DoorClosing_g01_c01.avi 1"),
    testlist01.txt (path only); videos are links named as UCF101's."""
    names, clips = _source_clips(source)
    classes = [_camel(n) for n in names]
    (out / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(classes)))
    lists = {"train": [], "test": []}
    for split, per_class, group0 in (("train", SSL_VIEW_TRAIN, 1), ("test", SSL_VIEW_TEST, 20)):
        for label, items in sorted(_clips_by_class(clips, split).items()):
            cls = classes[label]
            (out / cls).mkdir(exist_ok=True)
            for g, clip in enumerate(items[:per_class], start=group0):
                rel = f"{cls}/v_{cls}_g{g:02d}_c01.avi"
                (out / rel).symlink_to(source / clip["path"])
                lists[split].append(f"{rel} {label + 1}" if split == "train" else rel)
    (out / "trainlist01.txt").write_text("\n".join(lists["train"]) + "\n")
    (out / "testlist01.txt").write_text("\n".join(lists["test"]) + "\n")


def _write_hmdb51_view(source: Path, out: Path) -> None:
    """One ``{class}_test_split1.txt`` per class ("name.avi 1" train, "2" test, "0" unused) for
    every other synthetic class (class names in snake case); videos are links."""
    names, clips = _source_clips(source)
    for label, name in enumerate(names):
        if label % 2:
            continue
        cls = "_".join(name.split())
        (out / cls).mkdir()
        lines = []
        for split, per_class, mark in (("train", SSL_VIEW_TRAIN, 1), ("test", SSL_VIEW_TEST, 2),
                                       ("val", SSL_VIEW_UNUSED, 0)):
            for k, clip in enumerate(_clips_by_class(clips, split).get(label, [])[:per_class]):
                file = f"{cls}_{split}_{k}_u_nm_np1_fr_med_{k}.avi"
                (out / cls / file).symlink_to(source / clip["path"])
                lines.append(f"{file} {mark}")
        (out / f"{cls}_test_split1.txt").write_text(" \n".join(lines) + " \n")


def _write_ssl_pretrain_view(source: Path, out: Path) -> None:
    """Kinetics format (train/val/test.csv, classnames.json) listing the first SSL_VIEW_TRAIN train
    and SSL_VIEW_UNUSED val clips per class (val serves val and test); ``clips`` links the source.
    Smoke-scale pretraining reads it: a third of the built-in train split, so four pretrain runs fit
    the notebook's time budget. The labels are listed (the format needs them) and never used."""
    names, clips = _source_clips(source)
    (out / "clips").symlink_to(source)
    for split, src_split, per_class in (("train", "train", SSL_VIEW_TRAIN), ("val", "val", SSL_VIEW_UNUSED),
                                        ("test", "val", SSL_VIEW_UNUSED)):
        lines = [f"clips/{c['path']} {label}" for label, items in sorted(_clips_by_class(clips, src_split).items())
                 for c in items[:per_class]]
        (out / f"{split}.csv").write_text("\n".join(lines) + "\n")
    if (source / "classnames.json").is_file():
        (out / "classnames.json").write_text((source / "classnames.json").read_text())


VIEW_WRITERS = {"epic": _write_epic_view, "charades": _write_charades_view,
                "ucf101": _write_ucf101_view, "hmdb51": _write_hmdb51_view,
                "ssl_pretrain": _write_ssl_pretrain_view}


def prepare_views(configs: list[RunConfig]) -> None:
    """Build the views and the synthetic AVA data that ``configs`` read, before any run starts
    (the dataset resolution would build them on first use too; this does it once, up front);
    configs on user data need nothing."""
    for cfg in configs:
        d = cfg.data
        if d.dataset == "ava" and not d.root:
            ensure_synthetic_ava(d.synthetic_root, d.synthetic_scale, d.synthetic_seed)
        elif kind := view_kind(d):
            ensure_synthetic_view(kind=kind, synthetic_root=d.synthetic_root, scale=d.synthetic_scale,
                                  seed=d.synthetic_seed)
