"""The Lightning Trainer of `recon train`: checkpoints, logs, callbacks, and the hardware
arguments (devices, strategy, precision, clipping) that `recon bench` shares with it."""

from __future__ import annotations

import datetime as dt
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import (
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
    TQDMProgressBar,
)
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from torch.optim.swa_utils import get_ema_multi_avg_fn

from common.config import ConfigError
from common.hardware import HardwarePlan, device_type
from recon.train.checkpoint_io import AtomicCheckpointIO
from recon.train.config import TrainConfig

__all__ = ["build_trainer", "hardware_kwargs"]


def _loggers(run_dir: Path) -> list[Logger]:
    loggers: list[Logger] = [CSVLogger(run_dir, name="logs")]
    if importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX"):
        loggers.append(TensorBoardLogger(run_dir, name="tb"))
    return loggers


def build_trainer(
    cfg: TrainConfig,
    run_dir: Path,
    callbacks: Sequence[pl.Callback] = (),
    plan: HardwarePlan | None = None,
    **overrides: Any,
) -> pl.Trainer:
    """Lightning Trainer: checkpoints, early stopping, LR monitor, EMA, DDP when > 1 device.

    The precision and the progress bar's refresh (a host sync) follow `plan` (None:
    `cfg.hardware()`).
    """
    plan = plan if plan is not None else cfg.hardware()
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
    if cfg.ema_decay is not None:  # Lightning's weight averaging with an EMA update
        cbs.append(_ema_callback(cfg.ema_decay))
    if overrides.get("enable_progress_bar", True):
        cbs.append(TQDMProgressBar(refresh_rate=plan.sync_every))
    hardware = hardware_kwargs(cfg, plan)
    kwargs: dict[str, Any] = {
        "max_epochs": cfg.epochs,
        "max_time": None if cfg.budget_s is None else dt.timedelta(seconds=cfg.budget_s),
        **hardware,
        "callbacks": [*cbs, *callbacks],
        # checkpoints whole or absent after kill -9
        "plugins": [AtomicCheckpointIO(), *hardware["plugins"]],
        "logger": _loggers(run_dir),
        "log_every_n_steps": cfg.log_every_n_steps,
        "use_distributed_sampler": False,  # ZWFSDataModule shards and seeds itself
        "default_root_dir": run_dir,
        **overrides,
    }
    return pl.Trainer(**kwargs)


def hardware_kwargs(cfg: TrainConfig, plan: HardwarePlan) -> dict[str, Any]:
    """The Trainer arguments of the hardware (devices, strategy, precision, clipping) that
    `recon train` and `recon bench` share: the benchmark times the run's own step."""
    multi = cfg.num_nodes > 1 or (isinstance(cfg.devices, int) and cfg.devices > 1)
    plugins = _precision_plugin(plan, cfg.accelerator)
    return {
        "accelerator": cfg.accelerator,
        "devices": cfg.devices,
        "num_nodes": cfg.num_nodes,
        "strategy": "ddp" if multi else "auto",
        "precision": None if plugins else plan.precision,
        "plugins": plugins,
        "gradient_clip_val": cfg.optim.grad_clip,
    }


def _precision_plugin(plan: HardwarePlan, accelerator: str) -> list[pl.plugins.Precision]:
    """A precision plugin where the Trainer's own choice would differ from `plan`'s.

    Lightning turns 16-mixed on a CPU into bf16-mixed with a warning; a plan that says
    16-mixed gets it (fp16 autocast and a gradient scaler on the CPU), so that the GPU's
    scaler path runs in CI too. Empty: the Trainer's ``precision`` argument does it.
    """
    if plan.precision == "16-mixed" and device_type(accelerator) == "cpu":
        from lightning.pytorch.plugins.precision import MixedPrecision

        return [MixedPrecision("16-mixed", "cpu", torch.amp.GradScaler("cpu"))]
    return []


def _ema_callback(decay: float) -> pl.Callback:
    """Lightning's `WeightAveraging` (Lightning 2.5 and newer) with an EMA update."""
    try:
        from lightning.pytorch.callbacks import WeightAveraging
    except ImportError:
        raise ConfigError(
            f"ema_decay needs Lightning >= 2.5 (WeightAveraging); this is {pl.__version__}"
        ) from None
    return WeightAveraging(multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
