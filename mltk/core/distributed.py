"""Data-parallel training across processes and machines with torchrun.

``mltk train ... --nproc-per-node N`` re-runs the same command under
``torch.distributed.run`` (multi-node flags forwarded); each worker then calls
:func:`init` which reads torchrun's environment. Backend: nccl on CUDA, gloo
on CPU. Only rank 0 writes files; every collective has a timeout so that a
lost rank fails the run instead of hanging it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import sys
from collections.abc import Sequence

import torch
import torch.distributed as dist

from mltk.core.errors import MltkError, UsageError

DEFAULT_TIMEOUT_S = 300


@dataclasses.dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def under_torchrun() -> bool:
    """True inside a worker started by torchrun (or torch.distributed.run)."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def init(device_type: str) -> DistInfo:
    """Join the process group torchrun set up; a plain single process otherwise."""
    if not under_torchrun():
        return DistInfo()
    world = int(os.environ["WORLD_SIZE"])
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ["LOCAL_RANK"])
    backend = "nccl" if device_type == "cuda" else "gloo"
    if not dist.is_initialized():
        timeout = dt.timedelta(seconds=int(os.environ.get("MLTK_DIST_TIMEOUT", DEFAULT_TIMEOUT_S)))
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend, timeout=timeout)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, backend=backend)


def shutdown(*, wait_for_peers: bool = False) -> None:
    """Leave the process group; with ``wait_for_peers``, only once every rank has got here.

    A rank that finished first and tore its connections down while another
    still used them could abort at exit (gloo: ``terminate called without an
    active exception``). After a failure no rank waits: a peer may never come.
    """
    if dist.is_available() and dist.is_initialized():
        if wait_for_peers:
            dist.barrier()
        dist.destroy_process_group()


def broadcast_object(obj, info: DistInfo):
    """``obj`` from rank 0 on every rank."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def any_rank(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on at least one (so all ranks stop together)."""
    if not info.enabled:
        return flag
    value = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


# ---------------------------------------------------------------- launching


@dataclasses.dataclass(frozen=True)
class LaunchOptions:
    """torchrun's own flags, as mltk's train command accepts them."""

    nproc_per_node: int = 1
    nnodes: str = "1"
    node_rank: int = 0
    rdzv_backend: str = "c10d"
    rdzv_endpoint: str | None = None
    rdzv_id: str | None = None
    master_addr: str | None = None
    master_port: int | None = None
    max_restarts: int = 0

    @property
    def wanted(self) -> bool:
        return self.nproc_per_node > 1 or self.nnodes not in ("1", "1:1")

    def torchrun_args(self) -> list[str]:
        if self.nproc_per_node < 1:
            raise UsageError(f"--nproc-per-node must be at least 1, got {self.nproc_per_node}")
        args = [f"--nproc-per-node={self.nproc_per_node}", f"--nnodes={self.nnodes}",
                f"--max-restarts={self.max_restarts}"]
        single_node = self.nnodes in ("1", "1:1")
        if single_node and not self.rdzv_endpoint and not self.master_addr:
            return ["--standalone", *args]
        args += [f"--node-rank={self.node_rank}", f"--rdzv-backend={self.rdzv_backend}"]
        if self.rdzv_endpoint:
            args.append(f"--rdzv-endpoint={self.rdzv_endpoint}")
        if self.rdzv_id:
            args.append(f"--rdzv-id={self.rdzv_id}")
        if self.master_addr:
            args.append(f"--master-addr={self.master_addr}")
        if self.master_port:
            args.append(f"--master-port={self.master_port}")
        return args


def launch(options: LaunchOptions, worker_argv: Sequence[str]) -> int:
    """Run ``python -m mltk <worker_argv>`` under torch.distributed.run; the workers' exit code."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    # One thread per rank unless the user says otherwise: N ranks each
    # spawning one thread per core oversubscribe the machine.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if "--standalone" in options.torchrun_args() and sys.platform.startswith("linux"):
        # All ranks are on this machine: gloo's hostname-based interface choice is
        # needlessly fragile (containers, CI runners), loopback always works.
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    args = get_args_parser().parse_args([*options.torchrun_args(), "-m", "mltk", *worker_argv])
    try:
        run(args)
    except ChildFailedError as exc:
        codes = [failure.exitcode for failure in exc.failures.values()]
        for code in codes:
            if code in (2, 3, 4, 130):
                return code
        raise MltkError(f"a distributed worker failed (exit codes {codes})",
                        hint="the worker's error is printed above; rerun with MLTK_DEBUG=1 for tracebacks") from None
    return 0
