"""Training data: the datasets, their checks, and the loaders (`recon train`).

`load_data(cfg)` opens the training file (and the validation file, or splits a seeded
share off the training file) and checks that they match the config and each other.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from common.config import ConfigError
from common.hardware import HardwarePlan, hardware_plan
from data.schema import DatasetError
from data.torch_dataset import ZWFSDataset
from recon.train.config import TrainConfig
from recon.train.memory import TensorBatches, available_bytes, shard_range

__all__ = [
    "DatasetMismatchError",
    "TrainData",
    "ZWFSDataModule",
    "load_data",
    "missing_dataset_message",
]


class DatasetMismatchError(ConfigError):
    """A dataset does not match the config (wavelengths, sampling) or the other split."""


@dataclass
class TrainData:
    """Training and validation sets (items: intensity (L, H, W), opd (1, H, W) [nm])."""

    train: Dataset
    val: Dataset
    train_indices: np.ndarray  # indices of `train` in `source`
    source: ZWFSDataset  # the training file
    val_source: str  # the validation file, or "split of <train>"


def missing_dataset_message(path: Path, role: str = "training") -> str:
    """The one message for a dataset that is not there, with the command that makes it."""
    split = "val" if role == "validation" else "train"
    return (
        f"{role} dataset {path} not found; make it with: "
        f"sim generate --n 8000 --split {split} --out {path}"
    )


def _open(
    path: Path, wavelengths_um: Sequence[float] | None, role: str, by_clear: bool = False
) -> ZWFSDataset:
    if not path.is_file():
        raise FileNotFoundError(missing_dataset_message(path, role))
    try:
        return ZWFSDataset(path, wavelengths_um=wavelengths_um, divide_by_clear=by_clear)
    except DatasetError as err:
        raise DatasetMismatchError(err.args[0] if err.args else str(err)) from None
    except ValueError as err:  # a requested wavelength is not in the file
        raise DatasetMismatchError(
            f"{role} dataset {path}: {err} (config data.wavelengths_um)"
        ) from None


def _check_match(ds: ZWFSDataset, cfg: TrainConfig, role: str) -> None:
    if cfg.data.npix is not None and ds.npix != cfg.data.npix:
        raise DatasetMismatchError(
            f"{role} dataset {ds.path} has {ds.npix} px, the config (data.npix) asks for "
            f"{cfg.data.npix} px"
        )


def load_data(cfg: TrainConfig) -> TrainData:
    """Open train (and val, or split a seeded `val_fraction` off train); check they match."""
    by_clear = cfg.data.normalisation == "clear"
    train_ds = _open(cfg.data.train, cfg.data.wavelengths_um, "training", by_clear)
    _check_match(train_ds, cfg, "training")
    wl_um = [float(w) * 1e6 for w in train_ds.wavelengths_m]
    if cfg.data.val is not None and cfg.data.val.is_file():
        val_ds = _open(cfg.data.val, wl_um, "validation", by_clear)
        if val_ds.npix != train_ds.npix:
            raise DatasetMismatchError(
                f"validation dataset {val_ds.path} has {val_ds.npix} px, "
                f"training dataset {train_ds.path} {train_ds.npix} px"
            )
        return TrainData(train_ds, val_ds, np.arange(len(train_ds)), train_ds, str(val_ds.path))
    n = len(train_ds)
    n_val = max(1, round(cfg.data.val_fraction * n))
    if n - n_val < 1:
        raise DatasetMismatchError(f"training dataset {train_ds.path} is too small to split ({n})")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed)).numpy()
    val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    return TrainData(
        Subset(train_ds, train_idx.tolist()),
        Subset(train_ds, val_idx.tolist()),
        train_idx,
        train_ds,
        f"seeded {cfg.data.val_fraction:g} split of {train_ds.path}",
    )


def _arrays(ds: Dataset, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(intensity (n, L, H, W), opd (n, 1, H, W)) of `rows` of a `ZWFSDataset` or a
    `Subset` of one."""
    rows_np = rows.numpy()
    if isinstance(ds, Subset):
        return ds.dataset.read_arrays(np.asarray(ds.indices)[rows_np])  # type: ignore[attr-defined]
    return ds.read_arrays(rows_np)  # type: ignore[attr-defined]


def _nbytes(ds: Dataset) -> int:
    """Bytes of a split held in memory as float32 (intensity and OPD)."""
    src = ds.dataset if isinstance(ds, Subset) else ds
    per_sample = (len(src.wavelengths_m) + 1) * src.npix**2 * 4  # type: ignore[attr-defined]
    return len(ds) * per_sample  # type: ignore[arg-type]


class ZWFSDataModule(pl.LightningDataModule):
    """Training and validation batches with epoch-seeded, rank-aware shuffling.

    `placement`: "device" loads both splits once into the training device's memory and
    batches by indexing (no workers); "pinned" keeps them in host memory and copies each
    batch through a page-locked buffer; "loader" reads the file through DataLoader
    workers; "auto" lets the hardware plan pick by size (`HardwarePlan.placement`).
    With one process the order is the same on every path. Under DDP the in-memory
    placements give each process its own shard (`shard_range`: 1/world of the set in
    its memory, shuffled within), the loader a `DistributedSampler`.
    """

    def __init__(
        self,
        data: TrainData,
        batch_size: int,
        num_workers: int | None,
        seed: int,
        placement: str = "loader",
        plan: HardwarePlan | None = None,
    ) -> None:
        super().__init__()
        self.data = data
        if num_workers is None:  # follow the machine: one CPU stays with the training loop
            num_workers = min(8, max(0, (os.cpu_count() or 1) - 1))
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.requested = placement
        self.placement = placement
        self.plan = plan
        self._memory: dict[bool, tuple[torch.Tensor, torch.Tensor]] = {}

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer else (1, 0)

    def setup(self, stage: str) -> None:
        device = self.trainer.strategy.root_device if self.trainer else torch.device("cpu")
        if self.plan is None:
            self.plan = hardware_plan(device)
        world, rank = self._world()
        need = (_nbytes(self.data.train) + _nbytes(self.data.val)) // world  # this shard
        self.placement = self.plan.placement(self.requested, need, available_bytes(device))
        if self.placement == "loader" or self._memory:
            return
        where = device if self.placement == "device" else torch.device("cpu")
        for train, ds in ((True, self.data.train), (False, self.data.val)):
            x, y = _arrays(ds, shard_range(len(ds), world, rank))  # type: ignore[arg-type]
            self._memory[train] = (x.to(where), y.to(where))

    def _loader(self, ds: Dataset, train: bool) -> DataLoader | TensorBatches:
        trainer = self.trainer
        world, rank = self._world()
        per_rank = -(-len(ds) // world)  # type: ignore[arg-type]
        drop_last = train and per_rank > self.batch_size  # no 1-sample BatchNorm batch
        if self.placement != "loader":
            assert self.plan is not None  # set by setup()
            device = trainer.strategy.root_device if trainer else None
            return TensorBatches(
                self._memory[train],  # this process's shard
                self.batch_size,
                shuffle=train,
                seed=self.seed,
                drop_last=drop_last,
                device=device,
                epoch=lambda: trainer.current_epoch if trainer else 0,
                pin=self.placement == "pinned" and self.plan.pin_memory,
            )
        sampler = DistributedSampler(ds, world, rank, shuffle=train, seed=self.seed)
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            sampler=sampler,  # Lightning calls sampler.set_epoch(epoch)
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            drop_last=drop_last,
            pin_memory=self.plan is not None and self.plan.pin_memory,
        )

    def train_dataloader(self) -> DataLoader | TensorBatches:
        return self._loader(self.data.train, True)

    def val_dataloader(self) -> DataLoader | TensorBatches:
        return self._loader(self.data.val, False)
