"""In-memory training batches: the same batches, in the same order, as the DataLoader path;
host batches staged once; one shard per DDP process."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from data_helpers import make_dataset
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from common.hardware import hardware_plan
from recon.train import load_data, load_train_config
from recon.train.data import ZWFSDataModule
from recon.train.memory import TensorBatches, shard_range


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
    cpu, cuda = hardware_plan("cpu"), hardware_plan("cuda", bf16=True)
    assert cpu.placement("auto", 1, 100) == "device"
    assert cpu.placement("auto", 2**40, 100) == "loader"  # does not fit: read the file
    assert cuda.placement("auto", 2**40, 100) == "pinned"  # host memory, staged batches
    assert cpu.placement("pinned", 1, 100) == "pinned"


def test_host_batches_are_gathered_once_into_the_staging_buffer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pinned placement: each batch is gathered straight into its (page-locked) staging
    buffer and copied from there; nothing is pinned a second time."""

    def never(self: torch.Tensor, *args: object) -> torch.Tensor:
        raise AssertionError("a batch was pinned after its gather")

    monkeypatch.setattr(torch.Tensor, "pin_memory", never)
    staged: list[torch.Tensor] = []

    def staging(self: TensorBatches, t: torch.Tensor, n: int) -> torch.Tensor:
        staged.append(torch.empty((n, *t.shape[1:]), dtype=t.dtype))  # pinned on a GPU host
        return staged[-1]

    monkeypatch.setattr(TensorBatches, "_staging", staging)
    x = torch.arange(20.0).reshape(10, 2)
    batches = TensorBatches((x,), 4, True, seed=1, device=torch.device("meta"), pin=True)
    out = list(batches)
    assert len(staged) == len(out) == 3 and all(b[0].device.type == "meta" for b in out)
    order = batches._indices()
    torch.testing.assert_close(torch.cat(staged), x[order])  # the gather itself, once


def test_each_ddp_process_holds_only_its_shard() -> None:
    n, world = 10, 3
    shards = [shard_range(n, world, r) for r in range(world)]
    assert {len(s) for s in shards} == {4}  # equal: DDP processes step together
    assert set(torch.cat(shards).tolist()) == set(range(n))
    assert shards[0].tolist() == [0, 1, 2, 3] and shards[2].tolist() == [8, 9, 0, 1]


def test_data_module_reads_one_shard_per_ddp_process(tmp_path: Path) -> None:
    """Device placement under DDP: each process loads its half of a 2-process run, not
    the whole file (it was every process holding both splits whole)."""
    make_dataset(tmp_path / "train.h5", n_samples=20)
    make_dataset(tmp_path / "val.h5", n_samples=8)
    cfg = load_train_config("quick").with_overrides(
        **{"data.train": str(tmp_path / "train.h5"), "data.val": str(tmp_path / "val.h5")}
    )
    data = load_data(cfg)
    held = []
    for rank in (0, 1):
        dm = ZWFSDataModule(data, 4, 0, seed=0, placement="device", plan=hardware_plan("cpu"))
        cpu = SimpleNamespace(root_device=torch.device("cpu"))
        dm.trainer = SimpleNamespace(world_size=2, global_rank=rank, strategy=cpu, current_epoch=0)
        dm.setup("fit")
        (x, y), (xv, _) = dm._memory[True], dm._memory[False]
        assert len(x) == 10 and len(xv) == 4
        held.append(y.flatten(1))
        assert len(dm.train_dataloader()) == 2  # 10 samples, batches of 4, last dropped
    _, opd = data.source.read_arrays()
    both = torch.cat(held)
    assert torch.unique(both, dim=0).shape[0] == 20  # disjoint halves, all 20 samples
    assert all((opd.flatten(1) == row).all(1).any() for row in both)
