"""The machine a number was computed on: CPU model and instruction-set flags, GPUs, and the
fingerprint of the environment a run's final.json records (:func:`environment_fingerprint`).

Used by :mod:`avsf.report.provenance` (a table's machine) and :mod:`avsf.engine.evaluate` (a
run's). Never a host name, user name or path.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any

UNKNOWN = "unknown"


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else what platform says)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                return " ".join(value.split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or UNKNOWN


def gpu_models() -> list[str]:
    """Names of the visible CUDA devices; [] without CUDA. torch is only asked if the process
    has imported it already (a notebook that trained has), so rendering stays light."""
    torch = sys.modules.get("torch")
    try:
        if torch is None or not torch.cuda.is_available():
            return []
        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - a broken driver means no GPU for this record
        return []


# the CPU features that decide which kernels torch, oneDNN and numpy pick (x86 and Arm names)
CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
             "avx512_fp16", "amx_tile", "amx_bf16", "asimd", "sve", "sve2")


def cpu_flags() -> list[str]:
    """Those of :data:`CPU_FLAGS` this CPU has (/proc/cpuinfo; [] where it is not readable)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            have = set(value.split())
            return [f for f in CPU_FLAGS if f in have]
    return []


# variables that cap the instruction set ATen, oneDNN and MKL dispatch to: with them an AVX-512 CPU
# runs the AVX2 kernels (and reproduces an AVX2 machine's numbers, README "Same config, same numbers")
KERNEL_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR")


def kernel_env() -> dict[str, str]:
    """Those of :data:`KERNEL_ENV` set in this process, {} where none is."""
    return {k: os.environ[k] for k in KERNEL_ENV if os.environ.get(k)}


def environment_fingerprint() -> dict[str, Any]:
    """What a run's numbers may legitimately depend on besides its config: the torch build, the
    CPU (model, the instruction-set flags that pick kernels, torch's chosen capability) and the
    intra-op thread count (float reductions split by thread). Recorded in every final.json, so
    two runs that differ can be told apart by machine rather than by code (issue 17)."""
    import torch  # noqa: PLC0415

    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        capability = UNKNOWN
    forced = kernel_env()
    return {"torch": torch.__version__, "cpu": cpu_model(), "cpu_flags": cpu_flags(), "cpu_capability": capability,
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.version.cuda if torch.cuda.is_available() else None, "gpus": gpu_models(),
            # only where set, so the fingerprint of a machine run as it comes is what it always was
            **({"kernel_env": forced} if forced else {})}
