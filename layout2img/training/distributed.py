"""torchrun / DDP support and a data order that survives a restart.

``torchrun --nproc_per_node=N train.py ...`` sets RANK, WORLD_SIZE, LOCAL_RANK and
MASTER_ADDR/PORT; ``init_distributed`` picks NCCL on GPUs and gloo on CPUs. Only rank 0 logs
and writes checkpoints; every rank resumes from the same one.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Iterator

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group torchrun describes (if any); a single process gets rank 0 of 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))
    return DistInfo(rank=rank, world_size=world, local_rank=local)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= info.world_size
    return value


def broadcast_flag(flag: bool, info: DistInfo, device) -> bool:
    """True on every rank when any rank says True (e.g. 'loss is NaN, stop')."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


class ResumableSampler(Sampler[int]):
    """A seeded shuffle per epoch, sharded across ranks, that can start mid-epoch.

    The order depends only on ``(seed, epoch)``, so a resumed run sees exactly the batches the
    uninterrupted run would have (``start`` = number of this rank's samples already consumed).
    Like DistributedSampler, it pads with repeated indices so every rank gets the same count.
    """

    def __init__(self, length: int, seed: int, rank: int = 0, world_size: int = 1, shuffle: bool = True):
        if length <= 0:
            raise ValueError("ResumableSampler: empty dataset")
        self.length, self.seed, self.rank, self.world_size, self.shuffle = length, seed, rank, world_size, shuffle
        self.epoch, self.start = 0, 0
        self.per_rank = -(-length // world_size)

    def set_position(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = int(epoch), int(start)

    def __len__(self) -> int:
        return self.per_rank - self.start

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.length, generator=g)
        else:
            order = torch.arange(self.length)
        total = self.per_rank * self.world_size
        if total > self.length:
            order = torch.cat([order, order[: total - self.length]])
        mine = order[self.rank: total: self.world_size]
        return iter(mine[self.start:].tolist())


def infinite_batches(loader, sampler: ResumableSampler, epoch: int, position: int):
    """Yields (epoch, index_in_epoch_after_this_batch, batch) forever, resuming at a position."""
    while True:
        sampler.set_position(epoch, position * loader.batch_size)
        if hasattr(loader.dataset, "set_epoch"):
            loader.dataset.set_epoch(epoch)
        for batch in loader:
            position += 1
            yield epoch, position, batch
        epoch, position = epoch + 1, 0
