"""`recon train`: datasets, run folder, Lightning Trainer; `train(cfg) -> run_dir`.

Run folder ``<out_dir>/<arch>-<YYYYmmdd-HHMMSS>/``: ``config.yaml`` (resolved),
``checkpoints/best.ckpt`` and ``last.ckpt``, ``metrics.csv`` (every Lightning CSV log of
the run, resumes included; per-attempt logs under ``logs/``), TensorBoard logs under
``tb/`` when tensorboard is installed.
"""

from __future__ import annotations

import csv
import datetime as _dt
import importlib.util
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from data.schema import DatasetError, package_versions
from data.torch_dataset import ZWFSDataset
from recon.config import TrainConfig
from recon.ema import EMACallback
from recon.lit import LitRecon
from recon.models import build_model
from recon.normalization import NormStats, compute_stats
from sim.config import ConfigError

__all__ = ["DatasetMismatchError", "TrainData", "ZWFSDataModule", "load_data", "train"]

RUN_DIR_ENV = "ZWFS_RUN_DIR"
"""Environment variable that hands the run folder to DDP worker processes."""
CHECKPOINT_FORMAT = ("zwfs-recon-checkpoint", 1)


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


def _open(path: Path, wavelengths_um: Sequence[float] | None, role: str) -> ZWFSDataset:
    if not path.is_file():
        split = "val" if role == "validation" else "train"
        raise FileNotFoundError(
            f"{role} dataset {path} not found; make it with: "
            f"sim generate --n 8000 --split {split} --out {path}"
        )
    try:
        return ZWFSDataset(path, wavelengths_um=wavelengths_um)
    except DatasetError as err:
        raise DatasetMismatchError(str(err)) from None
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
    train_ds = _open(cfg.data.train, cfg.data.wavelengths_um, "training")
    _check_match(train_ds, cfg, "training")
    wl_um = [float(w) * 1e6 for w in train_ds.wavelengths_m]
    if cfg.data.val is not None and cfg.data.val.is_file():
        val_ds = _open(cfg.data.val, wl_um, "validation")
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


class ZWFSDataModule(pl.LightningDataModule):
    """Loaders with epoch-seeded, rank-aware shuffling (the same order after a resume)."""

    def __init__(self, data: TrainData, batch_size: int, num_workers: int, seed: int) -> None:
        super().__init__()
        self.data = data
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed

    def _loader(self, ds: Dataset, train: bool) -> DataLoader:
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer else (1, 0)
        sampler = DistributedSampler(ds, world, rank, shuffle=train, seed=self.seed)
        per_rank = len(sampler)
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            sampler=sampler,  # Lightning calls sampler.set_epoch(epoch)
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            drop_last=train and per_rank > self.batch_size,  # no 1-sample BatchNorm batch
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.data.train, True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.data.val, False)


def new_run_dir(cfg: TrainConfig, tag: str = "") -> Path:
    """A new run folder, shared by every process of one run (DDP workers, SLURM tasks).

    The launching process picks the folder and hands it to the DDP worker processes it
    starts through the environment variable `RUN_DIR_ENV` (removed after the run).
    """
    if os.environ.get(RUN_DIR_ENV):
        return Path(os.environ[RUN_DIR_ENV])
    job = os.environ.get("SLURM_JOB_ID")
    if job and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        return (cfg.out_dir / f"{cfg.arch}{tag}-slurm{job}").absolute()  # tasks start apart
    base = (cfg.out_dir / f"{cfg.arch}{tag}-{_dt.datetime.now():%Y%m%d-%H%M%S}").absolute()
    run_dir, k = base, 0
    while run_dir.exists():  # two runs in the same second
        k += 1
        run_dir = base.with_name(f"{base.name}-{k}")
    return run_dir


def _sim_config(ds: ZWFSDataset) -> Any:
    text = ds.attrs.get("config")
    try:
        return json.loads(text) if isinstance(text, str) else text
    except json.JSONDecodeError:
        return text


def checkpoint_meta(
    cfg: TrainConfig, data: TrainData, stats: NormStats, n_wl: int
) -> dict[str, Any]:
    """What a checkpoint needs to rebuild and describe the model without Lightning."""
    src = data.source
    return {
        "format": CHECKPOINT_FORMAT[0],
        "format_version": CHECKPOINT_FORMAT[1],
        "arch": cfg.arch,
        "model_kwargs": {**cfg.kwargs, "in_ch": n_wl, "out_ch": 1},
        "wavelengths_m": [float(w) for w in src.wavelengths_m],
        "npix": src.npix,
        "pupil": src.pupil.clone(),
        "normalization": stats.to_dict(),
        "train_config": cfg.model_dump(mode="json"),
        "sim_config": _sim_config(src),
        "data": {
            "train": str(src.path),
            "val": data.val_source,
            "split": src.attrs.get("split"),
            "seed": src.attrs.get("seed"),
            "fingerprint": src.attrs.get("fingerprint"),
        },
        "versions": {**package_versions(), "lightning": pl.__version__},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _loggers(run_dir: Path) -> list[Logger]:
    loggers: list[Logger] = [CSVLogger(run_dir, name="logs")]
    if importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX"):
        loggers.append(TensorBoardLogger(run_dir, name="tb"))
    return loggers


def build_trainer(
    cfg: TrainConfig, run_dir: Path, callbacks: Sequence[pl.Callback] = (), **overrides: Any
) -> pl.Trainer:
    """Lightning Trainer: checkpoints, early stopping, LR monitor, EMA, DDP when > 1 device."""
    cbs: list[pl.Callback] = [
        ModelCheckpoint(
            dirpath=run_dir / "checkpoints",
            filename="best",
            monitor="val/loss",
            mode="min",
            save_top_k=1,
            save_last=True,
            enable_version_counter=False,
        ),
        LearningRateMonitor(logging_interval="epoch"),
    ]
    if cfg.early_stopping_patience is not None:
        cbs.append(EarlyStopping("val/loss", patience=cfg.early_stopping_patience, mode="min"))
    if cfg.ema_decay is not None:
        cbs.append(EMACallback(cfg.ema_decay))
    multi = cfg.num_nodes > 1 or (isinstance(cfg.devices, int) and cfg.devices > 1)
    kwargs: dict[str, Any] = {
        "max_epochs": cfg.epochs,
        "accelerator": cfg.accelerator,
        "devices": cfg.devices,
        "num_nodes": cfg.num_nodes,
        "strategy": "ddp" if multi else "auto",
        "precision": cfg.precision,
        "gradient_clip_val": cfg.optim.grad_clip,
        "callbacks": [*cbs, *callbacks],
        "logger": _loggers(run_dir),
        "log_every_n_steps": cfg.log_every_n_steps,
        "use_distributed_sampler": False,  # ZWFSDataModule shards and seeds itself
        "default_root_dir": run_dir,
        **overrides,
    }
    return pl.Trainer(**kwargs)


def merge_metrics(run_dir: Path) -> Path | None:
    """Concatenate ``logs/version_*/metrics.csv`` (in order) into ``run_dir/metrics.csv``."""
    parts = sorted(
        (run_dir / "logs").glob("version_*/metrics.csv"),
        key=lambda p: int(p.parent.name.split("_")[1]),
    )
    rows: list[dict[str, str]] = []
    keys: list[str] = []
    for part in parts:
        with part.open(newline="") as fh:
            reader = csv.DictReader(fh)
            keys += [k for k in reader.fieldnames or [] if k not in keys]
            rows += list(reader)
    if not rows:
        return None
    out = run_dir / "metrics.csv"
    with out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    return out


def check_size(model: torch.nn.Module, npix: int) -> None:
    multiple = getattr(model, "size_multiple", 1)
    if npix % multiple:
        raise DatasetMismatchError(
            f"the data's {npix} px is not a multiple of {multiple}, which the model's depth "
            "needs (one factor 2 per level): use fewer widths or another sampling"
        )


def resolve(cfg: TrainConfig, data: TrainData) -> TrainConfig:
    """The config with the data's wavelengths and sampling filled in (what a resume checks)."""
    wl_um = [round(float(w) * 1e6, 6) for w in data.source.wavelengths_m]
    return cfg.with_overrides(**{"data.wavelengths_um": wl_um, "data.npix": data.source.npix})


def train(
    cfg: TrainConfig,
    resume: str | os.PathLike | None = None,
    callbacks: Sequence[pl.Callback] = (),
    **trainer_overrides: Any,
) -> Path:
    """Train `cfg.arch` on `cfg.data`; returns the run folder.

    Args:
        cfg: training config (for a resume: the run's own ``config.yaml``, possibly with
            more epochs).
        resume: a run folder to continue from its ``checkpoints/last.ckpt``.
        callbacks: extra Lightning callbacks.
        **trainer_overrides: extra `lightning.pytorch.Trainer` arguments (tests, debugging).
    """
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    data = load_data(cfg)
    cfg = resolve(cfg, data)
    n_wl = len(data.source.wavelengths_m)
    stats = compute_stats(
        data.source, data.source.pupil, data.train_indices, cfg.data.stats_samples
    )
    model = build_model(cfg.arch, cfg.kwargs, n_wl, stats)
    check_size(model.net, data.source.npix)
    ckpt_path = None
    if resume is not None:
        run_dir = Path(resume).absolute()
        ckpt_path = run_dir / "checkpoints" / "last.ckpt"
        if not ckpt_path.is_file():
            raise FileNotFoundError(f"nothing to resume: {ckpt_path} does not exist")
    else:
        run_dir = new_run_dir(cfg)
    lit = LitRecon(cfg, model, data.source.pupil, checkpoint_meta(cfg, data, stats, n_wl))
    return fit_run(cfg, lit, data, run_dir, callbacks, ckpt_path, **trainer_overrides)


def fit_run(
    cfg: TrainConfig,
    lit: pl.LightningModule,
    data: TrainData,
    run_dir: Path,
    callbacks: Sequence[pl.Callback] = (),
    ckpt_path: Path | None = None,
    extra_files: dict[str, str] | None = None,
    **trainer_overrides: Any,
) -> Path:
    """Write the run folder's config, fit `lit` on `data`, assemble metrics.csv; returns run_dir."""
    if rank_zero_only.rank == 0:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(cfg.to_yaml())
        for name, text in (extra_files or {}).items():
            (run_dir / name).write_text(text)
    dm = ZWFSDataModule(data, cfg.batch_size, cfg.data.num_workers, cfg.seed)
    trainer = build_trainer(cfg, run_dir, callbacks, **trainer_overrides)
    own_env = RUN_DIR_ENV not in os.environ
    os.environ[RUN_DIR_ENV] = str(run_dir)  # DDP workers started by fit() read it
    try:
        trainer.fit(lit, datamodule=dm, ckpt_path=ckpt_path)
    finally:
        if own_env:
            os.environ.pop(RUN_DIR_ENV, None)
        if trainer.is_global_zero:
            merge_metrics(run_dir)
    return run_dir
