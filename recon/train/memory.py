"""Training data held in memory: batches by indexing, no DataLoader workers.

When the training set fits in the device's memory (the 2.6 GB paper set fits an H100
many times), it is loaded once and every batch is a gather on the device; otherwise it
stays in pinned host memory and each batch is copied over asynchronously. The order is
the same epoch-seeded, rank-sharded shuffle as the DataLoader path (`DistributedSampler`
semantics), so a resumed run sees the same batches.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

__all__ = ["TensorBatches", "available_bytes", "placement_for"]

DEVICE_SHARE = 0.4
"""Largest share of the device's free memory the training set may take (the rest is for
the model, activations and the compiler's workspace)."""
HOST_SHARE = 0.25
"""Largest share of the host's available memory for an in-memory set on the CPU."""


def available_bytes(device: torch.device) -> int:
    """Free memory [bytes] of `device` (CUDA: `mem_get_info`; CPU: available RAM)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 0


def placement_for(requested: str, nbytes: int, device: torch.device) -> str:
    """ "device" (all on the device), "pinned" (host, pinned) or "loader" (DataLoader).

    `requested` "auto" picks the device when the set fits in `DEVICE_SHARE` of its free
    memory (`HOST_SHARE` of the RAM on a CPU), else pinned host memory for a GPU and the
    DataLoader for a CPU; any other value is taken as it is.
    """
    if requested != "auto":
        return requested
    share = DEVICE_SHARE if device.type == "cuda" else HOST_SHARE
    if nbytes <= share * available_bytes(device):
        return "device"
    return "pinned" if device.type == "cuda" else "loader"


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
        device: where batches go (`non_blocking` copies from pinned memory).
        epoch: called at the start of each pass for the current epoch.
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
    ) -> None:
        n = {int(t.shape[0]) for t in tensors}
        if len(n) != 1:
            raise ValueError(f"tensors differ in length: {sorted(n)}")
        self.tensors, self.n = tensors, n.pop()
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.world, self.rank, self.drop_last = world, rank, drop_last
        self.device, self.epoch = device, epoch

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
        batch = t.index_select(0, idx.to(t.device))  # (N, ...) -> (B, ...)
        if self.device is None or batch.device == self.device:
            return batch
        if batch.device.type == "cpu" and self.device.type == "cuda":
            batch = batch.pin_memory()
        return batch.to(self.device, non_blocking=True)
