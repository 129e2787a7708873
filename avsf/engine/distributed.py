"""Process groups for data-parallel training across processes and nodes.

Rank, world size and the master's address come from, in order: torchrun's variables (``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``), submitit's
``JobEnvironment`` (Slurm or local executor), or nothing at all (one process). NCCL joins GPU
processes, gloo CPU ones. BN statistics stay per process, as in the paper (no SyncBN).
"""

from __future__ import annotations

import contextlib
import os
import socket
import zlib
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits. ``world_size == 1`` means no process group."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    source: str = "none"  # "torchrun", "submitit", "initialized" or "none"

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _port_for(job_id: str) -> int:
    # every task of one job derives the same free-looking port from the job id
    return 20000 + zlib.crc32(job_id.encode()) % 20000


def detect(env: dict[str, str] | None = None) -> DistInfo:
    """Read the launcher's environment; a lone process with no variables gives world size 1."""
    env = dict(os.environ if env is None else env)
    if dist.is_available() and dist.is_initialized():
        return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(),
                        local_rank=int(env.get("LOCAL_RANK", 0)), source="initialized")
    if "RANK" in env and "WORLD_SIZE" in env:
        return DistInfo(rank=int(env["RANK"]), local_rank=int(env.get("LOCAL_RANK", 0)),
                        world_size=int(env["WORLD_SIZE"]), master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
                        master_port=int(env.get("MASTER_PORT", 29500)), source="torchrun")
    if env.get("SUBMITIT_EXECUTOR"):
        import submitit

        job = submitit.JobEnvironment()
        if job.num_tasks > 1:
            hosts = list(job.hostnames) or ["127.0.0.1"]
            port = int(env["MASTER_PORT"]) if "MASTER_PORT" in env else _port_for(str(job.job_id).split("_")[0])
            return DistInfo(rank=job.global_rank, local_rank=job.local_rank, world_size=job.num_tasks,
                            master_addr=env.get("MASTER_ADDR", hosts[0]), master_port=port, source="submitit")
    return DistInfo()


@contextlib.contextmanager
def process_group(*, use_cuda: bool) -> Iterator[DistInfo]:
    """Join (and afterwards leave) the process group the environment describes. A group that
    the caller already initialised is used as is and left alone."""
    info = detect()
    created = False
    if info.world_size > 1 and info.source != "initialized":
        os.environ.setdefault("MASTER_ADDR", info.master_addr)
        os.environ.setdefault("MASTER_PORT", str(info.master_port))
        if use_cuda:
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", init_method="env://",
                                rank=info.rank, world_size=info.world_size)
        created = True
    try:
        yield info
    finally:
        if created:
            dist.destroy_process_group()


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    if active():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum of `t` over processes (in place; `t` itself when there is one process)."""
    if active():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_buffers(model: torch.nn.Module) -> None:
    """Rank 0's buffers (BN running statistics) on every rank. DDP broadcasts them at the start
    of each training forward, so after a step every other rank holds statistics updated by its
    own share; an evaluation whose ranks must agree calls this first."""
    if active():
        for b in model.buffers():
            dist.broadcast(b, src=0)


def any_true(flag: bool, *, device: torch.device) -> bool:
    """True on every rank if it is true on one (so all ranks stop together)."""
    if not active():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    return bool(all_reduce_sum(t).item() > 0)


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order (a one-element list with one process)."""
    if not active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any) -> Any:
    """Rank 0's `obj` on every rank."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now: MASTER_PORT for a group of local
    processes (spawned DDP checks and tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
