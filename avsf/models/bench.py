"""`avsf bench model`: training-step speed and peak memory of a preset, and the speed
comparison that checks the speed targets (:func:`compare_speed`, ``--compare``).

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

The comparison (``avsf bench model --compare``) times each contender in its own process, the
steps of a group alternated round by round (so a load change hits every contender alike): the
AVSlowFast tiny step (with AVS) against the SlowFast tiny step at the same batch, and the R50
8x8 training step (ours with AVS, ours without) against pytorchvideo 0.1.5's
``create_audio_visual_slowfast`` on the same input. pytorchvideo is an optional benchmark extra
(``pip install -e '.[bench]'``), imported only here.
"""

from __future__ import annotations

import contextlib
import io
import os
import statistics
import threading
import time
import warnings
from typing import Callable

import torch
import torch.nn.functional as F

from avsf.engine.runtime import keep_freed_memory
from avsf.errors import USER_ERRORS, UserError
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


def training_step(model: torch.nn.Module, batch: dict[str, torch.Tensor], labels: torch.Tensor, device: str,
          bf16: bool) -> None:
    with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
        out = model(batch, drop_audio=False)
        logits = out["logits"] if "logits" in out else out["verb_logits"]
        loss = F.cross_entropy(logits.float(), labels[: logits.shape[0]] % logits.shape[1])
        if "avs_loss" in out:
            loss = loss + out["avs_loss"].float()
    loss.backward()
    model.zero_grad(set_to_none=True)


def sync_device(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def setup_step(preset: str, *, batch: int, crop: int | None, device: str):
    """(model in training mode, inputs with AVS negatives when the preset has AVS, labels, crop)."""
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
    return model, inputs, labels, crop


def bench_model(*, preset: str, batch: int, crop: int | None, iters: int, device: str, bf16: bool,
                profile: bool, threads: int | None = None) -> dict:
    """Forward+backward clips/s and peak memory of `preset` (see the module docstring);
    `threads` sets torch's CPU threads for the run (default: as they are)."""
    if batch < 1 or iters < 1:
        raise UserError(f"--batch {batch} and --iters {iters} must be at least 1")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible; use --device cpu")
    with _threads(threads):
        return _bench_model(preset=preset, batch=batch, crop=crop, iters=iters, device=device, bf16=bf16,
                            profile=profile)


@contextlib.contextmanager
def _threads(threads: int | None):
    keep_freed_memory()  # as training does (avsf.engine.runtime.cpu_threads)
    if threads is not None and threads < 1:
        raise UserError(f"--threads {threads}: give at least 1")
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _bench_model(*, preset: str, batch: int, crop: int | None, iters: int, device: str, bf16: bool,
                 profile: bool) -> dict:
    model, inputs, labels, crop = setup_step(preset, batch=batch, crop=crop, device=device)

    rss_before = _RssSampler.current()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    training_step(model, inputs, labels, device, bf16)  # warm-up: allocator, oneDNN kernels
    sync_device(device)
    times = []
    load_before = os.getloadavg()[0]
    cpu0 = time.process_time()
    with _RssSampler() as rss:
        for _ in range(iters):
            t0 = time.perf_counter()
            training_step(model, inputs, labels, device, bf16)
            sync_device(device)
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
        training_step(model, inputs, labels, device, bf16)
        sync_device(device)
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
            sync_device(device)
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


# --- the speed comparison --------------------------------------------------------------------
# Targets on 2 CPU threads: AVSlowFast tiny (with AVS) at most this many SlowFast tiny steps at the
# same batch; our R50 step at least this fast relative to pytorchvideo's plain AVSlowFast step.
TARGET_AV_OVER_SF = 2.0
TARGET_R50_AVS_SPEEDUP = 1.0
TARGET_R50_NO_AVS_SPEEDUP = 1.3
R50_PRESET = "avslowfast_r50_8x8"
PYTORCHVIDEO_VERSION = "0.1.5"


def _train_step(model: torch.nn.Module, inputs: dict[str, torch.Tensor], labels: torch.Tensor) -> Callable[[], None]:
    """One of our training steps (fp32, laterals live) as a closure."""
    return lambda: training_step(model, inputs, labels, "cpu", False)


def _import_pytorchvideo():
    """pytorchvideo's ``create_audio_visual_slowfast``, or a UserError saying how to install it."""
    try:
        with warnings.catch_warnings():  # its fvcore import warns that torch.jit.script is deprecated
            warnings.simplefilter("ignore", FutureWarning)
            import pytorchvideo
            from pytorchvideo.models.audio_visual_slowfast import create_audio_visual_slowfast
    except ImportError as e:
        raise UserError(f"the speed comparison needs pytorchvideo {PYTORCHVIDEO_VERSION} (an optional benchmark extra, "
                        f"never needed to train): pip install -e '.[bench]' (or pip install "
                        f"pytorchvideo=={PYTORCHVIDEO_VERSION} --no-deps), or pass --no-pytorchvideo; "
                        f"import failed: {e}") from e
    if getattr(pytorchvideo, "__version__", PYTORCHVIDEO_VERSION) != PYTORCHVIDEO_VERSION:
        raise UserError(f"pytorchvideo {pytorchvideo.__version__} is installed; the comparison is defined against "
                        f"{PYTORCHVIDEO_VERSION}: pip install pytorchvideo=={PYTORCHVIDEO_VERSION} --no-deps")
    return create_audio_visual_slowfast


def _pytorchvideo_step(*, crop: int, batch: dict[str, torch.Tensor], labels: torch.Tensor,
                       num_classes: int) -> Callable[[], None]:
    """pytorchvideo's ``create_audio_visual_slowfast`` (R50, its defaults: 8x8 with alpha 4, the
    authors' fusion) training step on `batch`'s slow, fast and audio tensors.

    Its head pools with fixed kernels, set here for the crop: (8, crop/32, crop/32) Slow,
    (32, crop/32, crop/32) Fast, (T_a/8, 1, F/8) audio; it takes audio as [N, 1, T, 1, F].
    Its forward writes into the list it is given (a fresh list per step) and its A->FS fusion
    prints a tensor size on every call (silenced)."""
    create_audio_visual_slowfast = _import_pytorchvideo()
    slow, fast, audio = batch["slow"], batch["fast"], batch["audio"]
    side = crop // 32
    ta, fa = audio.shape[2] // 8, audio.shape[3] // 8
    torch.manual_seed(0)
    model = create_audio_visual_slowfast(
        model_num_class=num_classes,
        head_pool_kernel_sizes=((slow.shape[2], side, side), (fast.shape[2], side, side), (ta, 1, fa))).train()
    audio = audio[:, :, :, None, :].contiguous()  # [N, 1, T, 1, F]

    def step() -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            logits = model([slow, fast, audio])
        F.cross_entropy(logits, labels % num_classes).backward()
        model.zero_grad(set_to_none=True)
    return step


# --- contenders, one process each ---------------------------------------------------------------
# Each contender runs in its own spawned process, so no contender's heap, allocator settings or
# freed buffers change another's timing (two models alternating in one process slowed our R50 step
# by about 0.4 s through the shared heap). Only one process computes at a time: the parent asks
# each in turn for one timed step, round by round, so a change of load hits every contender alike.

def _contender_step(spec: dict) -> Callable[[], None]:
    """(the step closure a contender process times, its input shapes): ``spec["kind"]`` "ours"
    (`preset`, `batch`, `crop`, `avs`) or "pytorchvideo" (on our R50 preset's input: same seeds,
    same tensors)."""
    if spec["kind"] == "ours":
        model, inputs, labels, _ = setup_step(spec["preset"], batch=spec["batch"], crop=spec["crop"], device="cpu")
        shapes = {k: list(v.shape) for k, v in inputs.items()}
        if not spec["avs"]:
            inputs = {k: v for k, v in inputs.items() if k != "audio_neg"}
        return _train_step(model, inputs, labels), shapes
    model, inputs, labels, crop = setup_step(R50_PRESET, batch=spec["batch"], crop=spec["crop"], device="cpu")
    num_classes = model.cfg.num_classes
    del model
    return _pytorchvideo_step(crop=crop, batch=inputs, labels=labels, num_classes=num_classes), {}


def _contender_main(conn, spec: dict, threads: int) -> None:
    """A contender process: build the step, warm it up, then answer each "step" message with
    (wall s, CPU s) of one step until "stop". Our contenders keep freed memory as training
    does (:func:`~avsf.engine.runtime.keep_freed_memory`); pytorchvideo runs as its users run
    it unless ``spec["keep_heap"]``."""
    try:
        if spec.get("keep_heap", spec["kind"] == "ours"):
            keep_freed_memory()
        torch.set_num_threads(threads)
        step, shapes = _contender_step(spec)
        step()
        conn.send(("ready", shapes))
        while conn.recv() == "step":
            started = time.monotonic()  # CLOCK_MONOTONIC: comparable between processes
            t0, c0 = time.perf_counter(), time.process_time()
            step()
            conn.send(("timed", (time.perf_counter() - t0, time.process_time() - c0, started)))
    except BaseException as e:  # reported to the parent, which names the contender
        conn.send(("user_error" if isinstance(e, USER_ERRORS) else "error", f"{type(e).__name__}: {e}"))
    finally:
        conn.close()


def _alternate(specs: dict[str, dict], rounds: int, threads: int) -> dict[str, dict]:
    """One process per contender (see above); after each has warmed up, `rounds` rounds of one
    timed step of each, in order. Returns name -> {"wall_s": [per round], "cpu_s": [...],
    "started": [monotonic clock at each step's start], "clips": clips per step, "input_shapes",
    "step_s_median", "clips_per_s"}."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    procs, shapes = {}, {}
    try:
        for name, spec in specs.items():  # started one after another: building an R50 takes both cores
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_contender_main, args=(child, spec, threads), daemon=True)
            proc.start()
            child.close()
            procs[name] = (proc, parent)
            shapes[name] = _expect(name, parent, "ready")
        out = {name: {"wall_s": [], "cpu_s": [], "started": [], "clips": spec["batch"], "input_shapes": shapes[name]}
               for name, spec in specs.items()}
        for _ in range(rounds):
            for name, (_, conn) in procs.items():
                conn.send("step")
                for key, value in zip(("wall_s", "cpu_s", "started"), _expect(name, conn, "timed")):
                    out[name][key].append(value)
    finally:
        for proc, conn in procs.values():
            with contextlib.suppress(OSError, BrokenPipeError):
                conn.send("stop")
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
    for r in out.values():
        r["step_s_median"] = statistics.median(r["wall_s"])
        r["clips_per_s"] = r["clips"] / r["step_s_median"]
    return out


def _expect(name: str, conn, what: str):
    try:
        kind, value = conn.recv()
    except EOFError:
        raise RuntimeError(f"speed comparison: the {name} process died without a word (killed? out of memory?)") from None
    if kind == "user_error":
        raise UserError(f"speed comparison, {name}: {value.split(': ', 1)[1]}")
    if kind == "error":
        raise RuntimeError(f"speed comparison: the {name} process failed: {value}")
    if kind != what:
        raise RuntimeError(f"speed comparison: the {name} process answered {kind!r}, expected {what!r}")
    return value


def _paired_ratio(a: dict, b: dict) -> float:
    """Median over rounds of a's step time / b's step time in the same round."""
    return statistics.median(x / y for x, y in zip(a["wall_s"], b["wall_s"]))


def compare_speed(*, threads: int = 2, tiny_batch: int = 32, r50_batch: int = 2, r50_crop: int = 128,
                  rounds: int = 9, r50_rounds: int = 5, pytorchvideo: bool = True) -> dict:
    """The speed targets, measured on the CPU (see the module docstring): returns the timings
    per contender and the ratios with their targets. Besides the contenders the targets name,
    pytorchvideo also runs with our allocator setting (``pytorchvideo_kept_heap``), so the
    report shows how much of the difference that setting alone makes."""
    if min(tiny_batch, r50_batch, rounds, r50_rounds) < 1:
        raise UserError("--batch, --r50-batch, --rounds and --r50-rounds must be at least 1")
    if threads < 1:
        raise UserError(f"--threads {threads}: give at least 1")
    if r50_crop < 32 or r50_crop % 32:
        raise UserError(f"--r50-crop {r50_crop}: give a multiple of 32 (pytorchvideo's head pools a fixed window)")
    if pytorchvideo:
        _import_pytorchvideo()  # the children import it too; a missing extra is said here, once
    result: dict = {"threads": threads, "rounds": rounds, "r50_rounds": r50_rounds, "load_average": [os.getloadavg()[0]],
                    "processes": "one per contender"}
    tiny_spec = dict(kind="ours", batch=tiny_batch, crop=None, avs=True)
    tiny = _alternate({p: dict(tiny_spec, preset=p) for p in ("slowfast_tiny", "avslowfast_tiny")}, rounds, threads)
    r50_spec = dict(batch=r50_batch, crop=r50_crop)
    specs = {"ours_avs": dict(r50_spec, kind="ours", preset=R50_PRESET, avs=True),
             "ours_no_avs": dict(r50_spec, kind="ours", preset=R50_PRESET, avs=False)}
    if pytorchvideo:
        specs["pytorchvideo"] = dict(r50_spec, kind="pytorchvideo", keep_heap=False)
        specs["pytorchvideo_kept_heap"] = dict(r50_spec, kind="pytorchvideo", keep_heap=True)
    r50 = _alternate(specs, r50_rounds, threads)
    result["tiny_input_shapes"] = tiny["avslowfast_tiny"]["input_shapes"]
    result["r50_input_shapes"] = r50["ours_avs"]["input_shapes"]
    result["load_average"].append(os.getloadavg()[0])
    result["tiny"], result["r50"] = tiny, r50
    checks = [("AVSlowFast tiny step / SlowFast tiny step", _paired_ratio(tiny["avslowfast_tiny"], tiny["slowfast_tiny"]),
               "<=", TARGET_AV_OVER_SF)]
    if pytorchvideo:
        checks += [("R50 with AVS: speed / pytorchvideo's", _paired_ratio(r50["pytorchvideo"], r50["ours_avs"]),
                    ">=", TARGET_R50_AVS_SPEEDUP),
                   ("R50 without AVS: speed / pytorchvideo's", _paired_ratio(r50["pytorchvideo"], r50["ours_no_avs"]),
                    ">=", TARGET_R50_NO_AVS_SPEEDUP)]
        result["same_allocator"] = {
            "with_avs": _paired_ratio(r50["pytorchvideo_kept_heap"], r50["ours_avs"]),
            "without_avs": _paired_ratio(r50["pytorchvideo_kept_heap"], r50["ours_no_avs"])}
    result["checks"] = [{"what": what, "value": value, "target": f"{op} {target}",
                         "met": value <= target if op == "<=" else value >= target}
                        for what, value, op, target in checks]
    return result


def format_comparison(result: dict) -> str:
    def rows(group: dict, labels: dict[str, str]) -> list[str]:
        return [f"    {labels[name]:<50} {r['step_s_median'] * 1e3:9.1f} ms  {r['clips_per_s']:8.2f} clips/s  "
                f"({statistics.median(r['cpu_s']):.2f} CPU s)" for name, r in group.items()]

    load = result["load_average"]
    lines = [f"speed comparison on the CPU, {result['threads']} threads, load average {load[0]:.1f} -> {load[1]:.1f} "
             f"(one process per contender, steps alternated; medians of {result['rounds']} rounds, R50 {result['r50_rounds']})",
             f"  tiny, forward+backward of {result['tiny_input_shapes']['slow'][0]} clips:"]
    lines += rows(result["tiny"], {"slowfast_tiny": "slowfast_tiny", "avslowfast_tiny": "avslowfast_tiny (AVS negatives)"})
    shapes = result["r50_input_shapes"]
    lines.append(f"  R50 8x8 ({R50_PRESET}), crop {shapes['slow'][-1]}, batch {shapes['slow'][0]}, training step:")
    lines += rows(result["r50"], {"ours_avs": "ours, with AVS (the real step)", "ours_no_avs": "ours, without AVS",
                                  "pytorchvideo": f"pytorchvideo {PYTORCHVIDEO_VERSION} create_audio_visual_slowfast",
                                  "pytorchvideo_kept_heap": "  the same with our allocator setting"})
    lines.append("  targets (per-round paired ratios, median; each contender in its own process):")
    lines += [f"    {c['what']:<50} {c['value']:6.2f}x  target {c['target']}: {'met' if c['met'] else 'NOT met'}"
              for c in result["checks"]]
    if "same_allocator" in result:
        same = result["same_allocator"]
        lines.append(f"  against pytorchvideo with our allocator setting too: with AVS {same['with_avs']:.2f}x, "
                     f"without {same['without_avs']:.2f}x (keep_freed_memory; not the targets' contender)")
    if load[0] > 0.5 * result["threads"] or load[1] > 0.5 * result["threads"]:
        lines.append("  note: the machine was busy (load average above half the threads); rerun idle for the record")
    return "\n".join(lines)
