"""`avsf bench gpu`: the GPU path checked on one GPU node in one command, printed as one JSON.

Five checks, each reported in its own entry (a failing check records its error and the others
still run):

1. ``step_bf16``: the training step (forward + backward, AVS negatives, laterals live) of
   ``avslowfast_r50_4x16`` at batch 8, crop 224, bf16 autocast and channels_last_3d: clips/s,
   peak memory, and the model-FLOP utilisation ``3 x forward FLOPs x clips/s / peak`` (backward
   counted as twice the forward), the peak being the card's dense bf16 tensor-core rate looked
   up from the device name (:data:`PEAK_BF16_TFLOPS`; ``--peak-tflops`` for another card).
2. ``step_compiled``: the same step through ``torch.compile`` (its compile time apart).
3. ``ddp``: a DDP step in 2 processes with NCCL (one per GPU; a node with one GPU runs one
   process through NCCL and says so), without ``find_unused_parameters``, checking that every
   rank holds the same gradients after the all-reduce.
4. ``loader``: the real loader on the built-in data at small scale (generated on first use,
   with a worker per core), its clips/s beside the GPU's appetite (the small recipe's step).
5. ``train_small``: 200 training steps of the small-scale recipe (``avsf train`` itself on the
   small built-in data, 5 epochs of 40 steps) and whether the training loss fell.

Without a GPU the command stops at once with a UserError saying so. ``device="cpu"`` (a test
hook, ``--dry-run-cpu``) runs the same code on the CPU with the tiny presets and a few steps,
so the plumbing is tested where no GPU is.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

from avsf.engine.distributed import free_port
from avsf.errors import UserError

# Dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, from the vendors' data sheets; matched
# against torch.cuda.get_device_name in order (the first substring that occurs wins).
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989.0), ("GH200", 989.0), ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0),
    ("A100", 312.0), ("L40S", 362.0), ("L40", 181.0), ("L4", 121.0), ("A10", 125.0),
)
GPU_PRESET = "avslowfast_r50_4x16"
SMALL_STEPS = 200  # 5 epochs x 40 steps of batch 16
SMALL_VIDEOS = 640  # data.limit_videos: 640 clips / batch 16 = 40 steps an epoch


def peak_bf16_tflops(device_name: str) -> float | None:
    """The card's dense bf16 peak (TFLOP/s) from its name, or None when not in the table."""
    for key, tflops in PEAK_BF16_TFLOPS:
        if key.lower() in device_name.lower():
            return tflops
    return None


def _check(name: str, fn: Callable[[], dict], report: dict) -> None:
    """Run one check into ``report[name]``: its dict (``"ok"`` True unless it says otherwise)
    and its wall time, or its error."""
    t0 = time.perf_counter()
    try:
        report[name] = {"ok": True, **fn()}
    except Exception as e:  # noqa: BLE001 - one failing check must not hide the others
        report[name] = {"ok": False, "error": f"{type(e).__name__}: {e}",
                        "traceback": traceback.format_exc(limit=4)}
    report[name]["wall_s"] = round(time.perf_counter() - t0, 2)


def _time_step(*, preset: str, batch: int, crop: int, device: str, bf16: bool, iters: int,
               compile_model: bool = False) -> dict[str, Any]:
    from avsf.engine import runtime
    from avsf.models.bench import setup_step, training_step, sync_device

    model, inputs, labels, crop = setup_step(preset, batch=batch, crop=crop, device=device)
    if device == "cuda":
        runtime.to_channels_last(model)
        torch.cuda.reset_peak_memory_stats()
    out: dict[str, Any] = {}
    if compile_model:
        # the dry run compiles with the eager backend: the same call, without inductor's minutes
        # of C++ compilation on a small CPU
        model = torch.compile(model, backend="inductor" if device == "cuda" else "eager")
        out["compile_backend"] = "inductor" if device == "cuda" else "eager"
        t0 = time.perf_counter()
        training_step(model, inputs, labels, device, bf16)  # compiles
        sync_device(device)
        out["compile_s"] = round(time.perf_counter() - t0, 2)
    training_step(model, inputs, labels, device, bf16)  # warm-up: allocator, kernels (cuDNN autotuning)
    sync_device(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        training_step(model, inputs, labels, device, bf16)
        sync_device(device)
        times.append(time.perf_counter() - t0)
    step = sorted(times)[len(times) // 2]
    out.update(preset=preset, batch=batch, crop=crop, bf16=bf16, iters=iters, step_s_median=round(step, 5),
               clips_per_s=round(batch / step, 2))
    if device == "cuda":
        out["peak_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def _with_mfu(step: dict, *, gflops_per_clip: float, peak_tflops: float | None) -> dict:
    achieved = 3 * gflops_per_clip * step["clips_per_s"] / 1e3  # TFLOP/s, backward = 2 x forward
    step.update(forward_gflops_per_clip=round(gflops_per_clip, 2), achieved_tflops=round(achieved, 2),
                peak_bf16_tflops=peak_tflops,
                mfu=round(achieved / peak_tflops, 4) if peak_tflops else None)
    if not peak_tflops:
        step["mfu_note"] = "the card's bf16 peak is not in avsf's table: pass --peak-tflops"
    return step


def _ddp_worker(rank: int, world: int, port: int, preset: str, batch: int, crop: int, device: str, bf16: bool,
                iters: int, queue) -> None:
    """One DDP process: a few steps of `preset`, then the per-rank gradient checksums."""
    try:
        backend = "nccl" if device == "cuda" else "gloo"
        torch.distributed.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                             world_size=world)
        dev = f"cuda:{rank}" if device == "cuda" else "cpu"
        if device == "cuda":
            torch.cuda.set_device(rank)
        from avsf.models.bench import setup_step

        model, inputs, labels, _ = setup_step(preset, batch=batch, crop=crop, device=dev)
        ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[rank] if device == "cuda" else None,
                                                        find_unused_parameters=False)
        times = []
        for _ in range(iters + 1):
            t0 = time.perf_counter()
            with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
                out = ddp(inputs, drop_audio=False)
                loss = torch.nn.functional.cross_entropy(out["logits"].float(), labels % out["logits"].shape[1])
                loss = loss + out.get("avs_loss", torch.zeros((), device=dev)).float()
            ddp.zero_grad(set_to_none=True)
            loss.backward()
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        checksum = torch.stack([p.grad.float().sum() for p in model.parameters() if p.grad is not None])
        sums = [torch.zeros_like(checksum) for _ in range(world)]
        torch.distributed.all_gather(sums, checksum)
        same = all(torch.allclose(s, sums[0], rtol=1e-5, atol=1e-6) for s in sums)
        queue.put((rank, {"step_s_median": round(sorted(times[1:])[len(times[1:]) // 2], 5), "grads_equal": same,
                          "params_with_grad": int(checksum.numel())}, None))
        torch.distributed.destroy_process_group()
    except Exception as e:  # noqa: BLE001 - reported to the parent
        queue.put((rank, None, f"{type(e).__name__}: {e}"))


def _ddp(*, preset: str, batch: int, crop: int, device: str, bf16: bool, iters: int) -> dict:
    import multiprocessing as mp

    world = min(2, torch.cuda.device_count()) if device == "cuda" else 2
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_ddp_worker, args=(r, world, port, preset, batch, crop, device, bf16, iters, queue))
             for r in range(world)]
    for p in procs:
        p.start()
    results = sorted(queue.get(timeout=600) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    errors = [err for _, _, err in results if err]
    if errors:
        raise RuntimeError("; ".join(errors))
    same = all(r["grads_equal"] for _, r, _ in results)
    out = {"ok": same, "backend": "nccl" if device == "cuda" else "gloo", "processes": world,
           "per_rank": [r for _, r, _ in results],
           "grads_equal_across_ranks": same}
    if device == "cuda" and world < 2:
        out["note"] = "one GPU on this node: the 2-process NCCL check needs two; one process ran through NCCL"
    return out


def _small_config(*, device: str, root: str):
    """The small-scale recipe (Table 3's AVSlowFast row), limited to SMALL_STEPS steps; on the CPU
    dry run the smoke preset with a handful of steps."""
    from avsf import experiments
    from avsf.presets import get_preset

    if device == "cuda":
        overrides = [*experiments.SMALL_OVERRIDES, f"data.synthetic_root={root}", "solver.epochs=5",
                     "solver.warmup_epochs=1", f"data.limit_videos={SMALL_VIDEOS}", "eval_every=5",
                     "data.num_temporal_views=1", "device=cuda", "bf16=true"]
        cfg = get_preset(GPU_PRESET).with_overrides(overrides)
        cfg.data.num_workers = min(8, max(1, (os.cpu_count() or 2) - 1))
        return cfg
    return get_preset("avslowfast_tiny").with_overrides(
        [f"data.synthetic_root={root}", "solver.epochs=2", "solver.warmup_epochs=0", "data.limit_videos=32",
         "eval_every=2", "device=cpu"])


def _loader(*, cfg, appetite: float, clips: int) -> dict:
    """The training loader of `cfg` (its workers, sampling and sizes) on its built-in data."""
    from avsf.data.bench import time_loader
    from avsf.engine import runtime

    dataset = runtime.build_dataset(cfg, "train")
    dataset.set_epoch(0, cfg.solver.epochs)
    batch = cfg.solver.batch_size
    # at least 4 batches: the first (worker start-up) is left out of the steady rate
    timed = time_loader(dataset, workers=cfg.data.num_workers, clips=min(max(clips, 4 * batch), len(dataset)),
                         batch_size=batch)
    given = timed["steady_clips_per_s"]
    if given != given:  # NaN: too few batches for a steady rate
        raise RuntimeError(f"the loader gave {timed['clips']} clips, too few batches of {batch} to time")
    return {"scale": cfg.data.synthetic_scale, "workers": cfg.data.num_workers, "batch": cfg.solver.batch_size,
            "loader_clips_per_s": round(given, 2), "worker_startup_s": round(timed["startup_s"], 2),
            "gpu_appetite_clips_per_s": appetite, "loader_keeps_up": given >= appetite,
            "failures": timed["failures"]}


def _train_small(*, cfg, out_dir: Path) -> dict:
    from avsf.engine.train import train

    final = train(cfg, out_dir / "train_small", fresh=True)
    epochs = [json.loads(line) for line in (out_dir / "train_small" / "metrics.jsonl").read_text().splitlines()]
    losses = [e["train_loss"] for e in epochs if e.get("kind") == "epoch"]
    fell = len(losses) >= 2 and losses[-1] < losses[0]
    return {"ok": fell, "steps": final.get("step"), "train_loss_per_epoch": [round(x, 4) for x in losses],
            "loss_fell": fell, "top1": final.get("top1"),
            "train_wall_time_s": final.get("train_wall_time_s")}


def gpu_check(*, device: str = "cuda", peak_tflops: float | None = None, work_dir: str | None = None,
              synthetic_root: str | None = None) -> dict[str, Any]:
    """Run the five checks (module docstring) and return the report. `device="cpu"` is the dry
    run (tiny presets, a few steps) that tests the plumbing without a GPU."""
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError(f"avsf bench gpu: no CUDA GPU is visible here (torch {torch.__version__}, built for CUDA "
                        f"{torch.version.cuda or 'none'}; CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}). "
                        f"Run it on a GPU node, e.g. `srun --gres=gpu:1 --cpus-per-task 16 avsf bench gpu`")
    from avsf.flops import count_model
    from avsf.presets import get_preset

    t_start = time.perf_counter()
    gpu = device == "cuda"
    name = torch.cuda.get_device_name(0) if gpu else "cpu (dry run)"
    peak = peak_tflops or (peak_bf16_tflops(name) if gpu else None)
    report: dict[str, Any] = {"device": name, "torch": torch.__version__, "cuda": torch.version.cuda,
                              "gpus": torch.cuda.device_count() if gpu else 0, "cpu_cores": os.cpu_count(),
                              "dry_run": not gpu}
    preset, batch, crop, iters = (GPU_PRESET, 8, 224, 10) if gpu else ("avslowfast_tiny", 2, 32, 2)
    cfg = get_preset(preset).model
    cfg.num_classes = cfg.num_classes if cfg.num_classes > 0 else 400
    gflops = float(count_model(cfg, crop)["gflops"])
    _check("step_bf16", lambda: _with_mfu(_time_step(preset=preset, batch=batch, crop=crop, device=device, bf16=gpu,
                                                     iters=iters), gflops_per_clip=gflops, peak_tflops=peak), report)
    _check("step_compiled", lambda: _with_mfu(_time_step(preset=preset, batch=batch, crop=crop, device=device,
                                                         bf16=gpu, iters=iters, compile_model=True),
                                              gflops_per_clip=gflops, peak_tflops=peak), report)
    _check("ddp", lambda: _ddp(preset=preset, batch=batch, crop=crop, device=device, bf16=gpu, iters=3), report)
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        root = synthetic_root or str(Path(tmp) / "synthetic")
        small = _small_config(device=device, root=root)
        from avsf.data.synthetic.dataset import ensure_synthetic

        # a worker per core: the small data's 3,200 clips would take minutes with the default 2
        ensure_synthetic(root, small.data.synthetic_scale, small.data.synthetic_seed, workers=os.cpu_count())

        def appetite() -> float:
            step = _time_step(preset=small.name, batch=small.solver.batch_size, crop=small.data.train_crop,
                              device=device, bf16=small.bf16 and gpu, iters=3 if gpu else 1)
            return step["clips_per_s"]

        _check("loader", lambda: _loader(cfg=small, appetite=appetite(), clips=256 if gpu else 8), report)
        _check("train_small", lambda: _train_small(cfg=small, out_dir=Path(tmp)), report)
    report["all_ok"] = all(v.get("ok") for v in report.values() if isinstance(v, dict))
    report["wall_s"] = round(time.perf_counter() - t_start, 1)
    return report
