"""Training data held in memory: batches by indexing, no DataLoader workers.

When the training set fits in the device's memory (the 2.6 GB paper set fits an H100
many times), it is loaded once and every batch is a gather on the device; otherwise it
stays in host memory and each batch is gathered straight into a page-locked buffer and
copied over asynchronously (one copy on the host, none of them a second pinning). Under
DDP each process holds its own shard (`shard_range`), not the whole set. The order is an
epoch-seeded shuffle, so a resumed run sees the same batches; one process alone sees the
batches of `DistributedSampler`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

__all__ = ["TensorBatches", "available_bytes", "shard_range"]


def available_bytes(device: torch.device) -> int:
    """Free memory [bytes] of `device` (CUDA: `mem_get_info`; CPU: available RAM)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 0


def shard_range(n: int, world: int, rank: int) -> Tensor:
    """Sample indices held by process `rank` of `world`: a contiguous block of ceil(n/world),
    the last one padded from the start, so that every process has as many batches (DDP
    steps together)."""
    per_rank = math.ceil(n / world)
    return torch.arange(rank * per_rank, (rank + 1) * per_rank) % n


class TensorBatches:
    """Batches of in-memory tensors: ``for x, y in TensorBatches(...)``.

    Args:
        tensors: equal-length tensors (N, ...), on the device or in host memory.
        batch_size: samples per batch (per process).
        shuffle: a new seeded order every epoch (seed + epoch), else in order.
        seed: base seed of the shuffle.
        world, rank: processes of the run and this one's index (each takes every
            world-th sample of the padded order, as `DistributedSampler`).
        drop_last: skip a last, incomplete batch.
        device: where batches go.
        epoch: called at the start of each pass for the current epoch.
        pin: gather host batches into page-locked memory and copy them to `device`
            asynchronously (a CUDA device; the set itself stays in ordinary memory).
    """

    def __init__(
        self,
        tensors: tuple[Tensor, ...],
        batch_size: int,
        shuffle: bool,
        seed: int,
        world: int = 1,
        rank: int = 0,
        drop_last: bool = False,
        device: torch.device | None = None,
        epoch: Callable[[], int] = lambda: 0,
        pin: bool = False,
    ) -> None:
        n = {int(t.shape[0]) for t in tensors}
        if len(n) != 1:
            raise ValueError(f"tensors differ in length: {sorted(n)}")
        self.tensors, self.n = tensors, n.pop()
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.world, self.rank, self.drop_last = world, rank, drop_last
        self.device, self.epoch, self.pin = device, epoch, pin

    def _indices(self) -> Tensor:
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed + self.epoch())
            order = torch.randperm(self.n, generator=gen)
        else:
            order = torch.arange(self.n)
        total = math.ceil(self.n / self.world) * self.world
        order = torch.cat([order, order[: total - self.n]])  # pad as DistributedSampler
        return order[self.rank : total : self.world]

    def __len__(self) -> int:
        per_rank = math.ceil(self.n / self.world)
        return per_rank // self.batch_size if self.drop_last else -(-per_rank // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        idx = self._indices()
        stop = len(self) * self.batch_size
        for a in range(0, min(stop, idx.numel()), self.batch_size):
            yield tuple(self._take(t, idx[a : a + self.batch_size]) for t in self.tensors)

    def _take(self, t: Tensor, idx: Tensor) -> Tensor:
        if self.device is None or t.device == self.device:
            return t.index_select(0, idx.to(t.device))  # (N, ...) -> (B, ...)
        staged = self._staging(t, idx.numel())
        torch.index_select(t, 0, idx, out=staged)  # the one host copy, into the staging buffer
        return staged.to(self.device, non_blocking=self.pin)

    def _staging(self, t: Tensor, n: int) -> Tensor:
        """A host buffer for a batch of `t` (page-locked when `pin`: torch's caching host
        allocator keeps it until its asynchronous copy is done)."""
        return torch.empty((n, *t.shape[1:]), dtype=t.dtype, pin_memory=self.pin)
