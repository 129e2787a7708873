"""Checkpoints: written atomically, the last K kept, and on resume the newest one that loads
is used (a truncated or corrupt file is skipped with a warning that names it).

A checkpoint is one ``torch.save`` dict holding only tensors and plain Python data, so it
loads with ``weights_only=True``.
"""

from __future__ import annotations

import io
import logging
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avsf.engine.io import atomic_write

log = logging.getLogger("avsf.engine")

REQUIRED_KEYS = ("model", "optimizer", "step", "epoch", "batch_in_epoch", "rng")
_NAME = re.compile(r"^ckpt-(\d+)\.pt$")


def checkpoint_path(ckpt_dir: str | Path, step: int) -> Path:
    return Path(ckpt_dir) / f"ckpt-{step:09d}.pt"


def list_checkpoints(ckpt_dir: str | Path) -> list[Path]:
    """Checkpoint files in `ckpt_dir`, oldest first (by step in the name)."""
    d = Path(ckpt_dir)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(state: dict[str, Any], *, ckpt_dir: str | Path, keep: int) -> Path:
    """Write `state` as ``ckpt-<step>.pt`` atomically and delete all but the newest `keep`."""
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise ValueError(f"checkpoint state lacks {missing}")
    # serialized in memory first: torch.save into a file that hits a full disk fails with an
    # opaque "unexpected pos" from its zip writer; writing bytes gives the OSError, and the size
    buffer = io.BytesIO()
    torch.save(state, buffer)
    path = atomic_write(checkpoint_path(ckpt_dir, state["step"]), buffer.getbuffer())
    for old in list_checkpoints(ckpt_dir)[:-max(keep, 1)]:
        old.unlink(missing_ok=True)
    for tmp in Path(ckpt_dir).glob(".ckpt-*.tmp"):  # left by a run killed mid-write
        tmp.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load one checkpoint on the CPU; raises if it is unreadable or incomplete."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or any(k not in state for k in REQUIRED_KEYS):
        raise ValueError(f"{path} is not a complete avsf checkpoint")
    return state


def load_latest(ckpt_dir: str | Path) -> tuple[dict[str, Any], Path] | None:
    """The newest checkpoint that loads, with its path; None if there is none. Each one that
    fails to load is reported with a warning naming it, and the one before it is tried."""
    for path in reversed(list_checkpoints(ckpt_dir)):
        try:
            return load_checkpoint(path), path
        except Exception as e:  # truncated zip, bad pickle, missing keys: all mean "skip it"
            log.warning("skipping checkpoint %s: it is truncated or corrupt (%s: %s); trying the one before it",
                        path, type(e).__name__, str(e).splitlines()[0] if str(e) else "")
    return None


# --- RNG states, as tensors and plain data (loadable with weights_only=True) -------------
def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and CUDA generator states."""
    py = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
