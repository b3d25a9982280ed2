"""Data-parallel training with PyTorch's own engine: ``torchrun`` + ``DistributedDataParallel``.

``edgefuse train`` started by ``torchrun --nproc_per_node N`` (or multi-node with ``--nnodes``,
``--node_rank``, ``--rdzv_endpoint``...) finds ``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` in its
environment, joins the process group (gloo on CPU, nccl on GPU), shards each epoch with a
``DistributedSampler`` and keeps the global batch size of a single-process run. Only rank 0 writes
files and prints.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data.distributed import DistributedSampler


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def env_rank() -> int:
    """The rank torchrun gave this process (0 outside torchrun), without importing torch."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def init_from_env() -> DistContext:
    """Join the process group described by torchrun's environment; a no-op single-process context otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return DistContext()

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, backend)


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled:
        if dist.is_initialized():
            dist.destroy_process_group()


def joins_process_group(fn):
    """Run ``fn(..., dist=ctx)`` inside torchrun's process group (a single-process context outside it)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        ctx = init_from_env()
        try:
            result = fn(*args, dist=ctx, **kwargs)
            barrier(ctx)
            return result
        finally:
            shutdown(ctx)

    return wrapper


class EpochShards:
    """Which rows each optimisation step reads: all of them in one process, or this rank's share.

    Under torchrun a ``DistributedSampler`` deals every epoch's shuffled rows out to the ranks and each
    step takes ``batch_size // world_size`` of them, so the global batch (and with it the learning-rate
    schedule) is a single process's. ``wrap`` puts the trained module in ``DistributedDataParallel``.
    """

    def __init__(self, n: int, batch_size: int, seed: int, ctx: DistContext | None = None) -> None:
        self.n = n
        self.world = ctx.world_size if ctx is not None and ctx.enabled else 1
        self.sampler = None
        if self.world > 1:
            self.sampler = DistributedSampler(range(n), num_replicas=self.world, rank=ctx.rank, shuffle=True,
                                              seed=seed)
        self.batch = max(1, batch_size // self.world)
        self.rows = len(self.sampler) if self.sampler is not None else n
        self.steps = math.ceil(self.rows / self.batch)

    def wrap(self, module):
        if self.sampler is None:
            return module

        return DistributedDataParallel(module)

    def order(self, epoch: int, gen):
        """This rank's row indices for ``epoch`` (single process: a permutation drawn from ``gen``)."""
        if self.sampler is None:
            return torch.randperm(self.n, generator=gen)
        self.sampler.set_epoch(epoch)
        return torch.as_tensor(list(iter(self.sampler)))

    def step_rows(self, order, step: int):
        return order[step * self.batch : (step + 1) * self.batch]
