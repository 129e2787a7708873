"""`avsf bench model`: training-step speed and peak memory of a preset.

One step = forward + backward of a batch in training mode (with AVS negatives when the preset
has AVS stages, the laterals live: the DropPathway draw is fixed to "keep", which costs the same
as "drop" since dropped laterals are still computed and multiplied by zero). No optimiser step.

Peak memory: on CUDA, ``torch.cuda.max_memory_allocated``. On CPU, the process's resident set
size is sampled every millisecond from /proc/self/statm by a background thread during the timed
steps; the report gives the peak and the peak minus the resident size before the first step
(model, inputs and the Python runtime excluded). Tensors freed between samples can be missed,
so it is a lower bound within about a millisecond's worth of allocations.

On a shared machine set OMP_NUM_THREADS=1: with two threads and other processes running,
OpenMP's spin-waiting can make a step ten times slower; the report gives the load average.

With ``profile=True``: the time split by op (torch.profiler, self CPU time over one step) and
by stage (each stage module timed alone, forward + backward, on the input it receives in the
model; the rest of the step is glue: concatenations, laterals' additions, pooling, loss).
"""

from __future__ import annotations

import os
import threading
import time

import torch
import torch.nn.functional as F

from avsf.errors import UserError
from avsf.models.network import AVSlowFast, build_model, example_inputs
from avsf.presets import get_preset


class _RssSampler:
    """Peak resident set size of this process, sampled from /proc/self/statm every `interval` s."""

    def __init__(self, interval: float = 0.001) -> None:
        self.interval = interval
        self.peak = self.current()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def current() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.current())
            time.sleep(self.interval)

    def __enter__(self) -> "_RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.current())


def _step(model: torch.nn.Module, batch: dict[str, torch.Tensor], labels: torch.Tensor, device: str,
          bf16: bool) -> None:
    with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
        out = model(batch, drop_audio=False)
        logits = out["logits"] if "logits" in out else out["verb_logits"]
        loss = F.cross_entropy(logits.float(), labels[: logits.shape[0]] % logits.shape[1])
        if "avs_loss" in out:
            loss = loss + out["avs_loss"].float()
    loss.backward()
    model.zero_grad(set_to_none=True)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def bench_model(*, preset: str, batch: int, crop: int | None, iters: int, device: str, bf16: bool,
                profile: bool) -> dict:
    """Forward+backward clips/s and peak memory of `preset` (see the module docstring)."""
    if batch < 1 or iters < 1:
        raise UserError(f"--batch {batch} and --iters {iters} must be at least 1")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible; use --device cpu")
    run_cfg = get_preset(preset)
    cfg = run_cfg.model
    if cfg.num_classes < 1:
        cfg.num_classes = 400  # smoke presets take the class count from the dataset
    crop = crop or run_cfg.data.train_crop
    if crop < 32:
        raise UserError(f"--crop {crop}: the crop must be at least 32 pixels")
    torch.manual_seed(0)
    model = build_model(cfg).to(device).train()
    gen = torch.Generator().manual_seed(0)
    negatives = cfg.arch == "avslowfast" and bool(cfg.avs_stages)
    inputs = example_inputs(cfg, crop=crop, batch=batch, device=device, with_negatives=negatives,
                            generator=gen)
    labels = torch.randint(0, 1 << 20, (batch,), generator=gen).to(device)

    rss_before = _RssSampler.current()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    _step(model, inputs, labels, device, bf16)  # warm-up: allocator, oneDNN kernels
    _sync(device)
    times = []
    load_before = os.getloadavg()[0]
    cpu0 = time.process_time()
    with _RssSampler() as rss:
        for _ in range(iters):
            t0 = time.perf_counter()
            _step(model, inputs, labels, device, bf16)
            _sync(device)
            times.append(time.perf_counter() - t0)
    cpu_per_step = (time.process_time() - cpu0) / iters
    step = sorted(times)[len(times) // 2]
    result = {
        "preset": preset, "device": device, "bf16": bf16, "batch": batch, "iters": iters,
        "threads": torch.get_num_threads(),
        "input_shapes": {k: list(v.shape) for k, v in inputs.items()},
        "params": sum(p.numel() for p in model.parameters()),
        "step_s_median": step, "step_s_min": min(times),
        "clips_per_s": batch / step,
        # CPU seconds of this process per step (all threads): with OpenMP spin-waiting on a busy
        # machine this grows with the load; the load average says how busy the machine was
        "cpu_s_per_step": cpu_per_step,
        "load_average": [load_before, os.getloadavg()[0]],
    }
    if device == "cuda":
        result["peak_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20
        result["peak_mem_method"] = "torch.cuda.max_memory_allocated"
    else:
        result["peak_rss_mb"] = rss.peak / 2**20
        result["peak_mem_mb"] = (rss.peak - rss_before) / 2**20
        result["peak_mem_method"] = "RSS sampled every 1 ms from /proc/self/statm, minus RSS before the first step"
    if profile:
        result["ops"] = _profile_ops(model, inputs, labels, device, bf16)
        result["stages"] = _profile_stages(model, inputs, device, bf16, step)
    return result


def _profile_ops(model, inputs, labels, device: str, bf16: bool, top: int = 12) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=acts) as prof:
        _step(model, inputs, labels, device, bf16)
        _sync(device)
    events = prof.key_averages()
    attr = "self_device_time_total" if device == "cuda" else "self_cpu_time_total"
    total = sum(getattr(e, attr) for e in events) or 1.0
    rows = sorted(events, key=lambda e: getattr(e, attr), reverse=True)[:top]
    return [{"op": e.key, "ms": getattr(e, attr) / 1e3, "share": getattr(e, attr) / total, "calls": e.count}
            for e in rows]


def _profile_stages(model, inputs, device: str, bf16: bool, step_s: float) -> list[dict]:
    """Each stage module timed alone (forward + backward, median of 3) on its in-model input."""
    if not isinstance(model, AVSlowFast):
        return []
    captured: dict[str, tuple] = {}
    modules = {}
    for pathway in ("slow", "fast", "audio"):
        for st, mod in getattr(model, pathway).items():
            modules[f"{pathway}.{st}"] = mod
    for junction, mod in model.av.items():
        modules[f"av.{junction}"] = mod
    for junction, mod in model.fs.items():
        modules[f"fs.{junction}"] = mod

    def capture(name: str):
        def hook(_module, args, _out) -> None:  # returns None: the output stays as it is
            captured.setdefault(name, tuple(a.detach() for a in args))
        return hook

    hooks = [m.register_forward_hook(capture(name)) for name, m in modules.items()]
    with torch.no_grad(), torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
        model(inputs, drop_audio=False)
    for h in hooks:
        h.remove()
    rows = []
    for name, mod in modules.items():
        if name not in captured:
            continue
        args = [a.clone().requires_grad_(a.is_floating_point()) for a in captured[name]]
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
                out = mod(*args)
            out.float().sum().backward()
            _sync(device)
            times.append(time.perf_counter() - t0)
        model.zero_grad(set_to_none=True)
        rows.append({"stage": name, "ms": 1e3 * sorted(times)[1], "share_of_step": sorted(times)[1] / step_s})
    return sorted(rows, key=lambda r: r["ms"], reverse=True)


def format_report(result: dict) -> str:
    shapes = ", ".join(f"{k} {v}" for k, v in result["input_shapes"].items())
    lines = [
        f"{result['preset']} on {result['device']}{' (bf16)' if result['bf16'] else ''}, {result['threads']} threads: "
        f"forward+backward of {result['batch']} clips ({shapes})",
        f"  {result['clips_per_s']:.2f} clips/s; step {result['step_s_median'] * 1e3:.1f} ms median, "
        f"{result['step_s_min'] * 1e3:.1f} ms best of {result['iters']}; {result['cpu_s_per_step']:.2f} CPU s per step; "
        f"load average {result['load_average'][0]:.1f} -> {result['load_average'][1]:.1f}",
        f"  peak memory {result['peak_mem_mb']:.0f} MiB ({result['peak_mem_method']})",
        f"  {result['params'] / 1e6:.2f} M parameters",
    ]
    if result.get("stages"):
        lines.append("  stages alone (forward+backward; share of a step):")
        lines += [f"    {r['stage']:<14} {r['ms']:8.1f} ms  {100 * r['share_of_step']:5.1f} %" for r in result["stages"]]
    if result.get("ops"):
        lines.append("  top ops (self time over one step):")
        lines += [f"    {r['op']:<40} {r['ms']:8.1f} ms  {100 * r['share']:5.1f} %  x{r['calls']}" for r in result["ops"]]
    return "\n".join(lines)
