"""`avsf bench data`: training clips/s of the loader beside a bare PyAV loop (the floor).

The floor opens each file, seeks, decodes the clip's video frames (converting the ones the
clip uses to RGB) and its audio span, and does nothing else: no resizing, no log-mel, no
negatives, no batching, no worker processes. The loader makes the very same clips (same
files, same start times) into training samples. Its cost per clip is measured in the main
process (0 workers), with 1 worker and with N workers; the ratio to the floor is the price of
everything the loader adds. Worker start-up is timed separately (it is paid once per epoch).
"""

from __future__ import annotations

import os
import platform
import time
from typing import Any

import numpy as np


def _bare_decode(path: str, *, start_s: float, span_s: float, num_frames: int, want_video: bool,
                 want_audio: bool, tuned: bool = False) -> int:
    """Decode one clip with nothing but PyAV; returns how many frames it converted.

    Plain: ``frame.to_ndarray(format="rgb24")`` as PyAV's documentation writes it. Tuned: one
    reused single-threaded swscale context, as the loader converts (see decode.to_rgb).
    """
    import av

    from avsf.data.decode import to_rgb

    converted = 0
    with av.open(path) as container:
        v = container.streams.video[0] if container.streams.video else None
        a = container.streams.audio[0] if container.streams.audio else None
        origin = float(v.start_time * v.time_base) if v is not None and v.start_time is not None else 0.0
        if want_video and v is not None:
            v.codec_context.thread_count = 1
            container.seek(int((origin + start_s) / v.time_base), stream=v, backward=True)
            step = span_s / num_frames
            nxt = start_s
            end = start_s + span_s
            for frame in container.decode(v):
                t = float(frame.pts * v.time_base) - origin
                if t + 1e-3 >= nxt:
                    to_rgb(frame) if tuned else frame.to_ndarray(format="rgb24")
                    converted += 1
                    nxt += step * max(1, int((t + 1e-3 - nxt) / step) + 1)
                if t >= end:
                    break
        if want_audio and a is not None:
            container.seek(int(max(0.0, origin + start_s - 0.2) / a.time_base), stream=a, backward=True)
            end = start_s + span_s
            for frame in container.decode(a):
                frame.to_ndarray()
                if float(frame.pts * a.time_base) - origin >= end:
                    break
    return converted


def time_loader(dataset, *, workers: int, clips: int, batch_size: int) -> dict[str, float]:
    from avsf.data.loader import build_loader

    loader = build_loader(dataset, batch_size=batch_size, num_workers=workers, shuffle=True, seed=0, epoch=0,
                          drop_last=False)
    t0, c0 = time.perf_counter(), time.process_time()
    seen = 0
    first = None
    for batch in loader:
        n = int(batch["video_index"].shape[0])
        if first is None:
            first = time.perf_counter()  # worker start-up and the first batch
            first_n = n
        seen += n
        if seen >= clips:
            break
    end, cpu = time.perf_counter(), time.process_time() - c0
    steady = (seen - first_n) / (end - first) if seen > first_n and end > first else float("nan")
    return {"clips": seen, "seconds": end - t0, "cpu_s": cpu, "startup_s": first - t0, "clips_per_s": seen / (end - t0),
            "steady_clips_per_s": steady, "failures": len(loader.failures)}


def bench_data(*, root: str, preset: str, workers: int, clips: int, rounds: int = 3) -> dict[str, Any]:
    """Measure the floor and the loader on the first `clips` training clips of `root`
    (each measurement `rounds` times, the best kept)."""
    import torch

    from avsf.data.datasets import build_dataset
    from avsf.presets import get_preset

    cfg = get_preset(preset).with_overrides({"data.root": str(root), "data.dataset": "kinetics"})
    dataset = build_dataset(cfg, "train")
    dataset.set_epoch(0, cfg.solver.epochs)
    clips = max(1, min(clips, len(dataset)))
    batch_size = max(1, min(cfg.solver.batch_size, clips // 6))  # several batches: a steady state to time
    from avsf.data.loader import batch_plan

    order = [i for b in batch_plan(num_items=len(dataset), batch_size=batch_size, shuffle=True, seed=0, epoch=0,
                                   rank=0, world_size=1, drop_last=False) for i in b][:clips]
    geo = dataset.geometry

    def floor(tuned: bool) -> tuple[float, float]:
        """(wall s, cpu s) per clip of the bare loop."""
        w0, c0 = time.perf_counter(), time.process_time()
        for item in order:
            _, start, _, _ = dataset.clip_plan(item)
            _bare_decode(dataset.records[item].path, start_s=start, span_s=geo.span_s, num_frames=geo.fast_frames,
                         want_video=dataset.want_video, want_audio=dataset.want_audio, tuned=tuned)
        return (time.perf_counter() - w0) / clips, (time.process_time() - c0) / clips

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a loader worker: one core per decoder
    try:
        # warm-ups (imports, codec tables, page cache), then the floors and the in-process
        # loader in alternation, keeping each one's best round: the least disturbed by
        # whatever else the machine runs. CPU time (this process) is the steadier measure on
        # a shared machine; wall time is reported beside it.
        _bare_decode(dataset.records[order[0]].path, start_s=0.0, span_s=geo.span_s, num_frames=geo.fast_frames,
                     want_video=dataset.want_video, want_audio=dataset.want_audio)
        dataset[order[0]]
        plain, tuned, main = [float("inf")] * 2, [float("inf")] * 2, [float("inf")] * 2
        for _ in range(rounds):
            plain = [min(a, b) for a, b in zip(plain, floor(False))]
            tuned = [min(a, b) for a, b in zip(tuned, floor(True))]
            m = time_loader(dataset, workers=0, clips=clips, batch_size=batch_size)
            main = [min(main[0], m["seconds"] / m["clips"]), min(main[1], m["cpu_s"] / m["clips"])]
    finally:
        torch.set_num_threads(threads)
    one = max((time_loader(dataset, workers=1, clips=clips, batch_size=batch_size) for _ in range(rounds)),
              key=lambda r: r["steady_clips_per_s"])
    many = max((time_loader(dataset, workers=workers, clips=clips, batch_size=batch_size) for _ in range(rounds)),
               key=lambda r: r["steady_clips_per_s"])
    sample = dataset[order[0]]
    return {
        "root": str(root), "preset": preset, "clips": clips, "batch_size": batch_size,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "workers": workers,
        "clip": {"slow_frames": geo.slow_frames, "fast_frames": geo.fast_frames, "span_s": round(geo.span_s, 4),
                 "shapes": {k: list(v.shape) for k, v in sample.items() if hasattr(v, "shape") and v.ndim > 0}},
        "cpu_ms_per_clip": {"floor_plain": 1e3 * plain[1], "floor_tuned": 1e3 * tuned[1], "loader_main": 1e3 * main[1]},
        "floor_clips_per_s": 1.0 / plain[0],
        "floor_tuned_clips_per_s": 1.0 / tuned[0],
        "loader_main_clips_per_s": 1.0 / main[0],
        "loader_1_worker_clips_per_s": one["steady_clips_per_s"],
        "loader_n_workers_clips_per_s": many["steady_clips_per_s"],
        "worker_startup_s": {"1": one["startup_s"], str(workers): many["startup_s"]},
        "cost_vs_floor_cpu": main[1] / plain[1],
        "cost_vs_tuned_floor_cpu": main[1] / tuned[1],
        "cost_vs_floor_wall_main": main[0] / plain[0],
        "cost_vs_floor_wall_1_worker": plain[0] ** -1 / one["steady_clips_per_s"],
        "failures": one["failures"] + many["failures"], "rounds": rounds,
    }


def format_report(result: dict[str, Any]) -> str:
    """A short table of the measurement."""
    r = result
    cpu = r["cpu_ms_per_clip"]
    nan = float("nan")
    rows = [
        ("bare PyAV loop (floor)", r["floor_clips_per_s"], cpu["floor_plain"], 1.0),
        ("bare loop, tuned convert", r["floor_tuned_clips_per_s"], cpu["floor_tuned"], cpu["floor_tuned"] / cpu["floor_plain"]),
        ("loader, main process", r["loader_main_clips_per_s"], cpu["loader_main"], r["cost_vs_floor_cpu"]),
        ("loader, 1 worker", r["loader_1_worker_clips_per_s"], nan, nan),
        (f"loader, {r['workers']} workers", r["loader_n_workers_clips_per_s"], nan, nan),
    ]
    lines = [f"data benchmark: {r['root']} ({r['preset']}, {r['clips']} clips, batch {r['batch_size']}, "
             f"{r['machine']}, best of {r['rounds']})",
             f"clip: {r['clip']['fast_frames']} frames over {r['clip']['span_s']} s; shapes {r['clip']['shapes']}",
             "", f"{'':<26} {'clips/s':>9} {'cpu ms/clip':>12} {'cpu vs floor':>13}"]
    for name, rate, ms, ratio in rows:
        lines.append(f"{name:<26} {rate:>9.1f} {('%.2f' % ms) if np.isfinite(ms) else '':>12} "
                     f"{('%.2fx' % ratio) if np.isfinite(ratio) else '':>13}")
    lines += ["",
              f"loader cost per clip vs the floor: {r['cost_vs_floor_cpu']:.2f}x cpu (main process), "
              f"{r['cost_vs_floor_wall_1_worker']:.2f}x wall (1 worker); vs the tuned floor: "
              f"{r['cost_vs_tuned_floor_cpu']:.2f}x cpu",
              "worker start-up (once per epoch): " +
              ", ".join(f"{k} worker(s) {v:.2f} s" for k, v in r["worker_startup_s"].items())]
    if r["failures"]:
        lines.append(f"decode failures replaced: {r['failures']}")
    return "\n".join(lines)
