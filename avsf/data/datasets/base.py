"""The dataset every format shares: records in, training clips or test views out.

`train` gives one random clip per video; `val`/`test` give one item per (video, temporal
view, spatial view). A sample is a dict (docs/INTERFACES.md, "Data"):

    "slow" [3,T,H,W], "fast" [3,alpha*T,H,W]       float32, normalised (not for audio_only)
    "audio" [1,Ta,F]                                 normalised log-mel (not for slowfast)
    "audio_neg" [1,Ta,F], "audio_neg_hard" bool      training with AVS on (avslowfast); an easy
                                                     negative is zeros here and filled in by
                                                     loader.collate from another video in the batch
    "has_audio" bool, "audio_pad" float32            padding: fraction of the span without sound
    "label" int64 | float [K] multi-hot, "verb"/"noun" int64 (EPIC)
    "video_index" int64, "view_index" int64
    "_failures" list[str]                            files replaced to make this sample

A file that fails to decode is replaced by another item (policy "replace": counted, logged
with its path, and listed in "_failures") or raises (policy "strict").
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import default_collate

from avsf.data import sampling
from avsf.data.audio import clip_logmel
from avsf.data.datasets.records import SplitListing, VideoRecord
from avsf.data.decode import DecodeError, decode_audio_span, decode_clip, open_media, resample_audio
from avsf.data.transforms import pack_pathways, eval_transform, train_transform
from avsf.errors import UserError

log = logging.getLogger("avsf.data")
class SilentAudioError(DecodeError):
    """A file with an audio stream gave no audio samples for a clip (data.decode_failure=strict)."""

    def __init__(self, path: str | os.PathLike, *, start: float, span: float):
        super().__init__(path, f"has an audio stream but it gives no samples at {start:.2f}-{start + span:.2f} s "
                               f"(unseekable, undecodable, empty, or shorter than the video; "
                               f"`avsf check-data` lists such files as no_sound). With "
                               f"data.decode_failure=replace these clips train on as silence and are "
                               f"counted per epoch as silent_clips")


class DataGoneError(UserError):
    """Most clip reads fail: the data went away (an unmounted share, deleted files) or cannot be read."""


MAX_ATTEMPTS = 10  # replacements tried before a sample gives up (a bug, not a bad file)


def evenly_spaced(items: list, limit: int) -> list:
    """At most `limit` of `items` (all when `limit` is 0), spread evenly over the list in its
    order: a split file sorted by class keeps every class."""
    if limit < 0:
        raise UserError(f"data.limit_videos={limit} must be 0 (all videos) or a positive count")
    if not limit or len(items) <= limit:
        return list(items)
    return [items[i * len(items) // limit] for i in range(limit)]


class AVClipDataset(torch.utils.data.Dataset):
    """Clips of the videos in `listing`, sampled and transformed as `cfg` says.

    ``collate`` batches its samples (the loader calls the dataset's own): torch's default stack
    here; a format with samples of varying size (AVA's boxes) overrides it."""

    collate = staticmethod(default_collate)

    def __init__(self, listing: SplitListing, *, cfg, split: str, dataset_name: str, probe: bool = True):
        if split not in ("train", "val", "test"):
            raise UserError(f"split {split!r} is not one of train, val, test")
        self.cfg = cfg
        self.split = split
        self.dataset_name = dataset_name
        self.geometry = sampling.ClipGeometry.from_config(cfg)
        arch = cfg.model.arch
        self.want_video = arch != "audio_only"
        self.want_audio = arch != "slowfast"
        # AVS pairs visual and audio features: only the full audiovisual model uses negatives
        self.want_negatives = split == "train" and arch == "avslowfast" and bool(cfg.model.avs_stages)
        self.multi_label = listing.multi_label
        self.is_epic = dataset_name == "epic"
        if self.is_epic:
            self.num_verbs, self.num_nouns = listing.num_verbs, listing.num_nouns
        self.num_classes = listing.num_classes
        self.class_names = listing.class_names
        self.split_file = listing.split_file
        self.bad_lines = listing.bad_lines
        self.epoch, self.total_epochs = 0, max(1, cfg.solver.epochs)
        self.blocked: set[int] = set()  # videos that killed a loader worker: never decoded again
        self.on_decode: Callable[[int], None] | None = None  # told which video is opened next (loader.py)
        records = evenly_spaced(listing.records, cfg.data.limit_videos)
        self.records, self.durations, self.audio_flags, self.stats = self._select(records, probe=probe)
        self.num_videos = len(self.records)
        self.views = cfg.data.num_temporal_views * cfg.data.num_spatial_views if split != "train" else 1
        log.info("%s %s: %s", dataset_name, split, ", ".join(f"{k} {v}" for k, v in self.stats.items()))

    # --- which videos are usable ---------------------------------------------------------
    def _select(self, records: list[VideoRecord], *, probe: bool) -> tuple[list[VideoRecord], list[float], list[bool], dict]:
        from avsf.data.probe import header_probe_cached

        listed = len(records)
        media = sorted({r.path for r in records if not r.frames} | {r.audio_path for r in records if r.frames and r.audio_path})
        results = header_probe_cached(media, timeout_s=self.cfg.data.decode_timeout_s,
                                      cache_key=os.path.abspath(self.split_file)) if probe and media else {}
        kept, durations, audio_flags = [], [], []
        found = readable = with_audio = no_video = 0
        for r in records:
            if r.frames:  # image sequence: the frames are the video, the sound is optional
                ok = os.path.exists(r.frames[0]) and os.path.exists(r.frames[-1])
                found += ok
                readable += ok
                res = results.get(r.audio_path)
                has_audio = bool(res and res.readable and res.info["has_audio"])
                duration = len(r.frames) / r.fps
            else:
                res = results.get(r.path)
                if res is None and not probe:
                    ok, has_audio, duration = os.path.exists(r.path), True, 0.0
                    found += ok
                    readable += ok
                else:
                    found += res is not None and res.status != "missing"
                    ok = res is not None and res.readable
                    readable += ok
                    has_audio = bool(ok and res.info["has_audio"])
                    duration = float(res.info["duration_s"]) if ok else 0.0
                    if ok and self.want_video and not res.info["has_video"]:
                        no_video += 1
                        ok = False
            with_audio += ok and has_audio
            if ok:
                kept.append(r)
                durations.append(duration)
                audio_flags.append(has_audio)
        stats = {"listed": listed, "found": found, "readable": readable, "with_audio": with_audio,
                 "no_video": no_video, "used": len(kept), "bad_lines": len(self.bad_lines)}
        return kept, durations, audio_flags, stats

    # --- the interface -------------------------------------------------------------------
    def set_epoch(self, epoch: int, total_epochs: int) -> None:
        """The epoch drives the per-sample randomness and the AVS negative curriculum."""
        self.epoch, self.total_epochs = int(epoch), max(1, int(total_epochs))

    def __len__(self) -> int:
        return self.num_videos * self.views

    def __getitem__(self, index: int) -> dict[str, Any]:
        failures: list[str] = []
        item = int(index)
        for attempt in range(MAX_ATTEMPTS):
            video = self.video_of(item)
            path = self.records[video].path
            if video in self.blocked:
                failures.append(f"{path}: blocked (it crashed or hung a loader worker)")
            else:
                try:
                    self._notify(video)
                    sample = self._load(item, attempt)
                    sample["_failures"] = failures
                    return sample
                except SilentAudioError:
                    raise  # only raised under "strict"; its message says what to do
                except Exception as e:  # noqa: BLE001  (any decode problem: the policy decides)
                    reason = e.reason if isinstance(e, DecodeError) else f"{type(e).__name__}: {e}"
                    if self.cfg.data.decode_failure == "strict":
                        raise DecodeError(path, f"{reason} (data.decode_failure=strict; "
                                                f"set it to replace to skip bad files)") from e
                    failures.append(f"{path}: {reason}")
                    log.warning("decode failed, sample replaced: %s: %s", path, reason)
            item = self.replacement(index, attempt)
        raise DataGoneError(f"{MAX_ATTEMPTS} files in a row failed to decode for item {index}: the data seems to "
                            f"have gone away or be unreadable (first: {failures[0]}; last: {failures[-1]}). Check "
                            f"that the dataset is mounted and readable (avsf check-data), then run again: the run "
                            f"resumes from its newest checkpoint")

    def video_of(self, item: int) -> int:
        """The video an item is read from (subclasses with other item layouts override it)."""
        return item // self.views

    def _notify(self, video: int) -> None:
        if self.on_decode is not None:
            self.on_decode(video)

    def replacement(self, index: int, attempt: int) -> int:
        """The item that stands in for `index` after `attempt` failures (deterministic)."""
        rng = sampling.sample_rng(self.cfg.seed, self.epoch, index, attempt, 0x5EED)
        return int(rng.integers(len(self)))

    # --- one sample ----------------------------------------------------------------------
    def _window(self, video: int) -> tuple[float, float]:
        r = self.records[video]
        if r.window is not None:
            return r.window
        return (0.0, self.durations[video])

    def clip_plan(self, item: int, attempt: int = 0) -> tuple[np.random.Generator, float, int, int]:
        """(the sample's generator after drawing the start, clip start in s, temporal view,
        spatial view) of an item: where its clip lies in time."""
        cfg, geo = self.cfg, self.geometry
        video = item // self.views
        rng = sampling.sample_rng(cfg.seed, self.epoch, item, attempt)
        window = self._window(video)
        if self.split == "train":
            return rng, sampling.train_start(rng, window=window, span_s=geo.span_s), 0, 0
        t_view, s_view = divmod(item % self.views, cfg.data.num_spatial_views)
        start = sampling.test_starts(window=window, span_s=geo.span_s, num_views=cfg.data.num_temporal_views)[t_view]
        return rng, start, t_view, s_view

    def _load(self, item: int, attempt: int) -> dict[str, Any]:
        cfg, geo = self.cfg, self.geometry
        video = item // self.views
        record = self.records[video]
        rng, start, t_view, s_view = self.clip_plan(item, attempt)
        sample: dict[str, Any] = {}
        container = None if record.frames else open_media(record.path)
        try:
            frames, waveform, pad = self._decode(record, container, start=start)
            if self.want_video:
                if self.split == "train":
                    clip = train_transform(frames, rng=rng, jitter=tuple(cfg.data.train_jitter), crop=cfg.data.train_crop,
                                           flip=cfg.data.random_flip)
                else:
                    clip = eval_transform(frames, short_side=cfg.data.test_short_side, crop=cfg.data.test_crop,
                                          spatial_index=s_view, num_spatial=cfg.data.num_spatial_views)
                sample["slow"], sample["fast"] = pack_pathways(clip, alpha=geo.alpha)
            sample.update(self._audio_fields(waveform, video=video, container=container, record=record,
                                             start=start, rng=rng))
        finally:
            if container is not None:
                container.close()
        self.check_sound(video, waveform, pad, start=start)
        sample["has_audio"] = bool(self.audio_flags[video])
        sample["audio_pad"] = torch.tensor(pad if waveform is not None else 1.0, dtype=torch.float32)
        sample.update(self._labels(record, start=start))
        sample["video_index"] = torch.tensor(video, dtype=torch.int64)
        sample["view_index"] = torch.tensor(t_view * cfg.data.num_spatial_views + s_view, dtype=torch.int64)
        return sample

    def check_sound(self, video: int, waveform: np.ndarray | None, pad: float, *, start: float) -> None:
        """Under decode_failure=strict, a clip with no sound from a file that has an audio
        stream raises (it is counted as ``silent_clips`` otherwise)."""
        wants = self.want_audio or self.want_negatives
        if (wants and self.cfg.data.decode_failure == "strict" and self.audio_flags[video]
                and (waveform is None or pad >= 1.0)):
            raise SilentAudioError(self.records[video].path, start=start, span=self.geometry.span_s)

    def _audio_fields(self, waveform: np.ndarray | None, *, video: int, container: Any, record: VideoRecord,
                      start: float, rng: np.random.Generator) -> dict[str, Any]:
        """The clip's log-mel ``"audio"`` and, when AVS trains, its negative ``"audio_neg"`` (a hard
        one decoded from the same video, else zeros that the collate fills with another video's)."""
        out: dict[str, Any] = {}
        if self.want_audio:
            out["audio"] = self._logmel(waveform)
        if self.want_negatives:
            neg, hard = self._negative(video, container, record, start=start, rng=rng, has_audio=waveform is not None)
            out["audio_neg"] = self._logmel(neg) if neg is not None else torch.zeros_like(out["audio"])
            out["audio_neg_hard"] = hard
        return out

    def _logmel(self, waveform: np.ndarray | None) -> torch.Tensor:
        d, m = self.cfg.data, self.cfg.model
        return clip_logmel(waveform, sample_rate=d.audio_sample_rate, n_fft=d.n_fft, hop_length=d.hop_length,
                           n_mels=m.audio_mel_bins, frames=m.audio_frames, mean=d.logmel_mean, std=d.logmel_std)

    def _decode(self, record: VideoRecord, container: Any, *, start: float) -> tuple[np.ndarray | None, np.ndarray | None, float]:
        """(frames uint8 [N,H,W,3] | None, mono waveform at the audio rate | None, padding)."""
        geo, rate = self.geometry, self.cfg.data.audio_sample_rate
        want_audio = self.want_audio or self.want_negatives
        if not record.frames:
            clip = decode_clip(record.path, start_s=start, duration_s=geo.span_s, num_frames=geo.fast_frames,
                               audio_rate=rate, want_video=self.want_video, want_audio=want_audio, container=container)
            return clip.frames, clip.audio, clip.audio_pad
        frames = self._read_images(record, start=start) if self.want_video else None
        waveform, pad = None, 1.0
        if want_audio and record.audio_path and os.path.exists(record.audio_path):
            audio_container = open_media(record.audio_path)
            try:
                if audio_container.streams.audio:
                    waveform, pad = self._audio_span(audio_container, start=start)
            finally:
                audio_container.close()
        return frames, waveform, pad

    def _read_images(self, record: VideoRecord, *, start: float) -> np.ndarray:
        """The frame images shown at the clip's sample times: uint8 [N,H,W,3]."""
        from PIL import Image

        geo = self.geometry
        times = start + np.arange(geo.fast_frames) * (geo.span_s / geo.fast_frames)
        idx = np.clip(np.floor(times * record.fps + 1e-6).astype(int), 0, len(record.frames) - 1)
        cache: dict[int, np.ndarray] = {}
        out = []
        for i in idx:
            if i not in cache:
                try:
                    with Image.open(record.frames[i]) as img:
                        cache[i] = np.asarray(img.convert("RGB"))
                except OSError as e:
                    raise DecodeError(record.frames[i], f"cannot read frame image: {e}") from e
            out.append(cache[i])
        return np.stack(out)

    def _audio_span(self, container: Any, *, start: float) -> tuple[np.ndarray, float]:
        span, rate = self.geometry.span_s, self.cfg.data.audio_sample_rate
        native, native_rate, pad = decode_audio_span(container, start_s=start, duration_s=span)
        return resample_audio(native, orig_rate=native_rate, new_rate=rate, length=max(1, int(round(span * rate)))), pad

    def _negative(self, video: int, container: Any, record: VideoRecord, *, start: float,
                  rng: np.random.Generator, has_audio: bool) -> tuple[np.ndarray | None, bool]:
        """An AVS negative: (waveform, hard). Hard: the same video's audio at least
        `hard_negative_min_shift_s` away, decoded here from the open file. Easy (None): the
        audio of another video, which the loader's collate takes from another sample of the
        same batch (no second file to open; see loader.collate)."""
        d, geo = self.cfg.data, self.geometry
        p_hard = sampling.hard_negative_probability(epoch=self.epoch, total_epochs=self.total_epochs,
                                                    switch=d.curriculum_switch, fraction=d.hard_negative_fraction)
        if has_audio and container is not None and rng.random() < p_hard:
            shifted = sampling.hard_negative_start(rng, window=self._window(video), span_s=geo.span_s,
                                                   positive_start=start, min_shift_s=d.hard_negative_min_shift_s)
            if shifted is not None:
                return self._audio_span(container, start=shifted)[0], True
        return None, False

    def _labels(self, record: VideoRecord, *, start: float) -> dict[str, torch.Tensor]:
        if self.is_epic:
            return {"label": torch.tensor(int(record.label), dtype=torch.int64),
                    "verb": torch.tensor(record.verb, dtype=torch.int64),
                    "noun": torch.tensor(record.noun, dtype=torch.int64)}
        if self.multi_label:
            labels: set[int] = set(record.label)  # video level (val/test)
            if self.split == "train" and record.frame_labels:  # the frames the clip covers
                lo = int(np.floor(start * record.fps))
                hi = int(np.ceil((start + self.geometry.span_s) * record.fps))
                labels = {x for fl in record.frame_labels[max(0, lo):max(lo + 1, hi)] for x in fl}
            hot = torch.zeros(self.num_classes, dtype=torch.float32)
            if labels:
                hot[list(labels)] = 1.0
            return {"label": hot}
        return {"label": torch.tensor(int(record.label), dtype=torch.int64)}


def describe(ds: AVClipDataset) -> str:
    return f"{ds.dataset_name}/{ds.split} ({Path(ds.split_file).name}): " + \
        ", ".join(f"{k} {v}" for k, v in ds.stats.items())
