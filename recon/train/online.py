"""`recon train --online`: every training batch simulated on the training device.

Batch k of a run holds the samples with global indices k B W + r B + (0 .. B-1) (B the
batch size, W the processes, r this one's rank), drawn by `sim.aberrations` from
(seed, "online", index) as `sim generate` draws a file: a run is reproducible, needs no
dataset file and never sees the same aberration twice. Validation runs on a fixed file
(`data.val`) or on a fixed simulated set (`data.online_val_samples`, stream "val").
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from data.clear import divide_by_clear
from recon.models import NormStats
from recon.train.config import TrainConfig
from recon.train.memory import TensorBatches
from recon.train.normalization import compute_stats
from sim.aberrations import stream_id
from sim.config import SimConfig, load_sim_config
from sim.detector import bin_frames
from sim.samples import file_illumination, reference_frames, simulate_batch
from sim.zwfs import ZWFSModel

__all__ = ["OnlineDataModule", "OnlineSimulator", "online_stats"]

ONLINE_STREAM = stream_id("online")


@dataclass
class OnlineSimulator:
    """Samples by global index on `device`: (intensity (B, L, N, N), opd (B, 1, N, N) nm)."""

    cfg: SimConfig
    seed: int
    device: torch.device
    stream: int = ONLINE_STREAM
    by_clear: bool = False  # divide the frames by their clear frames (`data.clear`)

    def __post_init__(self) -> None:
        self.engine = ZWFSModel(self.cfg, device=self.device)
        self.basis = self.engine.basis()
        self.illumination = file_illumination(self.engine, self.seed, self.stream)
        with torch.no_grad():
            self.reference_clear = reference_frames(self.engine, self.illumination)[0]

    @property
    def pupil(self) -> Tensor:
        """(N, N) detector-grid pupil transmission, on the CPU."""
        return bin_frames(self.engine.pupil, self.cfg.detector.binning).float().cpu()

    def samples(self, n: int, chunk: int = 64) -> tuple[Tensor, Tensor]:
        """Samples 0 .. n-1 of this stream, simulated `chunk` at a time and concatenated."""
        parts = [self.batch(np.arange(a, min(a + chunk, n))) for a in range(0, n, chunk)]
        x, y = (torch.cat(t) for t in zip(*parts, strict=True))
        return x, y

    @torch.no_grad()
    def batch(self, indices: np.ndarray) -> tuple[Tensor, Tensor]:
        """The samples `indices`: what `sim generate` would write for them in this stream
        (`sim.samples.simulate_batch`), noise drawn on the device."""
        b = simulate_batch(
            self.engine, indices, self.seed, self.stream, self.basis,
            illumination=self.illumination,
        )  # fmt: skip
        x = b.intensity.float()
        if self.by_clear:
            x = divide_by_clear(x, b.clear if b.clear is not None else self.reference_clear)
        return x, b.opd.float()[:, None]


class _OnlineTrainBatches:
    """One epoch of simulated batches; the batch index runs on from the trainer's step."""

    def __init__(self, sim: OnlineSimulator, batch: int, steps: int, trainer: Any) -> None:
        self.sim, self.batch_size, self.steps, self.trainer = sim, batch, steps, trainer

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        world, rank = self.trainer.world_size, self.trainer.global_rank
        first = self.trainer.current_epoch * self.steps  # resumes continue the sequence
        for k in range(first, first + self.steps):
            start = (k * world + rank) * self.batch_size
            yield self.sim.batch(np.arange(start, start + self.batch_size))


def online_stats(sim: OnlineSimulator, n: int) -> NormStats:
    """Normalisation statistics (`compute_stats`) of `n` samples of a stream of their own."""
    x, y = OnlineSimulator(sim.cfg, sim.seed, sim.device, stream_id("stats"), sim.by_clear).samples(
        n
    )
    return compute_stats(TensorDataset(x, y), sim.pupil, max_samples=n)


class OnlineDataModule(pl.LightningDataModule):
    """Simulated training batches, and validation on a fixed simulated set or file."""

    def __init__(self, cfg: TrainConfig, sim_cfg: SimConfig, val: tuple[Tensor, Tensor]) -> None:
        super().__init__()
        self.cfg, self.sim_cfg, self.val = cfg, sim_cfg, val
        self.sim: OnlineSimulator | None = None

    def setup(self, stage: str) -> None:
        device = self.trainer.strategy.root_device if self.trainer else torch.device("cpu")
        by_clear = self.cfg.data.normalisation == "clear"
        self.sim = OnlineSimulator(self.sim_cfg, self.cfg.seed, device, by_clear=by_clear)

    def train_dataloader(self) -> _OnlineTrainBatches:
        assert self.sim is not None
        steps = max(1, self.cfg.data.online_samples_per_epoch // self.cfg.batch_size)
        return _OnlineTrainBatches(self.sim, self.cfg.batch_size, steps, self.trainer)

    def val_dataloader(self) -> TensorBatches:
        trainer = self.trainer
        return TensorBatches(
            self.val,
            self.cfg.batch_size,
            shuffle=False,
            seed=self.cfg.seed,
            world=trainer.world_size if trainer else 1,
            rank=trainer.global_rank if trainer else 0,
            device=trainer.strategy.root_device if trainer else None,
        )


def online_sim_config(cfg: TrainConfig) -> SimConfig:
    """The simulated system of an online run: `data.sim_config`, a packaged name or path."""
    return load_sim_config(cfg.data.sim_config)
