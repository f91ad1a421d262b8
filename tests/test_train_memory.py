"""In-memory training batches: the same batches, in the same order, as the DataLoader path."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from recon.train.memory import TensorBatches, placement_for


@pytest.mark.parametrize(("world", "rank"), [(1, 0), (2, 1), (3, 2)])
@pytest.mark.parametrize("drop_last", [False, True])
def test_same_batches_as_distributed_sampler(world: int, rank: int, drop_last: bool) -> None:
    x = torch.arange(23.0)[:, None]
    y = -x
    batches = TensorBatches((x, y), 4, True, seed=7, world=world, rank=rank, drop_last=drop_last)
    sampler = DistributedSampler(TensorDataset(x, y), world, rank, shuffle=True, seed=7)
    loader = DataLoader(TensorDataset(x, y), batch_size=4, sampler=sampler, drop_last=drop_last)
    for epoch in (0, 1, 5):
        batches.epoch = lambda e=epoch: e
        sampler.set_epoch(epoch)
        ours, theirs = list(batches), list(loader)
        assert len(ours) == len(theirs) == len(batches) == len(loader)
        for (xa, ya), (xb, yb) in zip(ours, theirs, strict=True):
            torch.testing.assert_close(xa, xb)
            torch.testing.assert_close(ya, yb)


def test_validation_order_is_fixed_and_placement_follows_size() -> None:
    x = torch.arange(10.0)
    batches = TensorBatches((x,), 3, False, seed=0)
    assert torch.cat([b[0] for b in batches]).tolist() == x.tolist()
    cpu = torch.device("cpu")
    assert placement_for("auto", 1, cpu) == "device"
    assert placement_for("auto", 2**62, cpu) == "loader"  # does not fit: read the file
    assert placement_for("pinned", 1, cpu) == "pinned"
