"""Exponential moving average (EMA) of model weights, and a Lightning callback for it.

EMA_t = decay * EMA_{t-1} + (1 - decay) * W_t after each optimizer step (Polyak &
Juditsky 1992; as timm's ModelEmaV2). Built on `torch.optim.swa_utils.AveragedModel`
with `get_ema_multi_avg_fn`; buffers (e.g. BatchNorm running statistics) are averaged
too. `EMACallback` keeps the EMA during `Trainer.fit`, validates with the EMA weights
and writes them as the checkpoint's `state_dict` (the raw training weights go in the
callback's state, so resuming continues training from the raw weights).
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

__all__ = ["EMACallback", "ModelEMA"]


class ModelEMA(AveragedModel):
    """EMA copy of `model` (a deep copy, on the model's device), initialised to its weights.

    Call `update_parameters(model)` after each optimizer step; `ema.module` is the
    averaged network. Unlike a bare `AveragedModel`, the first call already averages
    (the copy at construction counts as the first sample).
    """

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay must be in [0, 1], got {decay}")
        super().__init__(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
        self.decay = decay
        self.update_parameters(model)  # n_averaged 0 -> 1: a copy; later calls blend

    def tensors(self) -> list[torch.Tensor]:
        """The averaged parameters and buffers, in `model.parameters(), model.buffers()` order."""
        return [*self.module.parameters(), *self.module.buffers()]


def _model_tensors(model: nn.Module) -> list[torch.Tensor]:
    return [*model.parameters(), *model.buffers()]


class EMACallback(pl.Callback):
    """Lightning callback: EMA of the LightningModule's weights.

    Updates after every optimizer step (so gradient accumulation is respected), swaps the
    EMA weights in for validation and back afterwards, and saves the EMA weights as the
    checkpoint's `state_dict`, so that a checkpoint loaded for inference is the EMA model.
    """

    def __init__(self, decay: float = 0.999) -> None:
        super().__init__()
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay must be in [0, 1], got {decay}")
        self.decay = decay
        self.ema: ModelEMA | None = None
        self._swapped = False
        self._last_step = -1
        self._raw_to_restore: dict[str, torch.Tensor] | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # On resume the module holds the EMA weights (the checkpoint's state_dict):
        # start the EMA from them, then put the raw training weights back.
        self.ema = ModelEMA(pl_module, self.decay)
        if self._raw_to_restore is not None:
            pl_module.load_state_dict(self._raw_to_restore)
            self._raw_to_restore = None
        self._last_step = trainer.global_step

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any
    ) -> None:
        if self.ema is not None and trainer.global_step > self._last_step:
            self.ema.update_parameters(pl_module)
            self._last_step = trainer.global_step

    @torch.no_grad()
    def _swap(self, pl_module: nn.Module) -> None:
        """Exchange the module's and the EMA's weights in place (twice = identity)."""
        assert self.ema is not None
        for p_model, p_ema in zip(_model_tensors(pl_module), self.ema.tensors(), strict=True):
            tmp = p_model.detach().clone()
            p_model.detach().copy_(p_ema)
            p_ema.copy_(tmp)
        self._swapped = not self._swapped

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.ema is not None and not self._swapped:
            self._swap(pl_module)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.ema is not None and self._swapped:
            self._swap(pl_module)

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self.ema is None:
            return
        # While swapped the module holds the EMA weights and the EMA holds the raw ones.
        ema_sd = pl_module.state_dict() if self._swapped else self.ema.module.state_dict()
        raw_sd = self.ema.module.state_dict() if self._swapped else pl_module.state_dict()
        checkpoint["state_dict"] = {k: v.detach().clone() for k, v in ema_sd.items()}
        checkpoint["ema_raw_state_dict"] = {k: v.detach().clone() for k, v in raw_sd.items()}
        checkpoint["ema_decay"] = self.decay

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._raw_to_restore = checkpoint.get("ema_raw_state_dict")
