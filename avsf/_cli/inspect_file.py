"""avsf inspect: what the loader sees in one media file."""

from __future__ import annotations

import json

HELP = "show what the data loader sees in a media file (streams, duration, one training clip's shapes)"


def add_arguments(p) -> None:
    p.add_argument("file", help="a video or audio file in any container FFmpeg reads")
    p.add_argument("--preset", default="avslowfast_r50_4x16",
                   help="preset whose sampling and sizes to use (default: avslowfast_r50_4x16)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def inspect_file(path: str, *, preset: str, overrides: list[str] | None = None) -> dict:
    """Header facts of `path` and the shapes of one training clip made from it."""
    from avsf.data.probe import probe_files
    from avsf.errors import UserError
    from avsf.presets import get_preset

    cfg = get_preset(preset).with_overrides(list(overrides or []) + ["data.decode_failure=strict"])
    # the header is read in a guarded child: a file that crashes FFmpeg cannot take us down
    result = probe_files([path], deep=False, timeout_s=cfg.data.decode_timeout_s)[path]
    if not result.readable:
        raise UserError(f"cannot read {path}: {result.reason or result.status}")
    info = result.info
    out = {"file": path, "duration_s": round(info["duration_s"], 4), "fps": round(info["fps"], 4),
           "num_frames": info["num_frames"], "has_video": info["has_video"], "has_audio": info["has_audio"],
           "sample_rate": info["sample_rate"], "channels": info["channels"],
           "width": info["width"], "height": info["height"],
           "video_codec": info["video_codec"], "audio_codec": info["audio_codec"], "preset": preset}
    if cfg.model.arch != "audio_only" and not info["has_video"]:
        raise UserError(f"{path} has no video stream; the {preset} preset needs one (try --preset audio_only_r50)")
    from avsf.data.datasets.base import AVClipDataset  # torch: only for files worth a clip
    from avsf.data.datasets.records import SplitListing, VideoRecord

    listing = SplitListing(records=[VideoRecord(path=path, label=0, name=path)], num_classes=1,
                           class_names=["?"], split_file=path)
    dataset = AVClipDataset(listing, cfg=cfg, split="train", dataset_name="inspect")
    try:
        sample = dataset[0]
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001  (one line, no traceback: name the file and the reason)
        raise UserError(f"cannot decode a clip from {path}: {type(e).__name__}: {e}") from e
    out["clip_span_s"] = round(dataset.geometry.span_s, 4)
    out["video_shapes"] = {k: list(sample[k].shape) for k in ("slow", "fast") if k in sample}
    out["audio_shape"] = list(sample["audio"].shape) if "audio" in sample else None
    out["audio_pad"] = round(float(sample["audio_pad"]), 4)
    return out


def run(args) -> int:
    out = inspect_file(args.file, preset=args.preset, overrides=args.set)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        width = max(map(len, out))
        for k, v in out.items():
            print(f"{k:<{width}}  {v}")
    return 0
