"""LightningModule of `recon train`: one function per phase, NaN guard, self-describing checkpoints.

The loss is `recon.losses.OPDLoss` (pupil-masked NPCC + masked MSE/L1, piston removed)
on OPD / opd_scale_nm, so that its pixel term is of order 1 whatever the data. Every
checkpoint carries, under the key ``"zwfs"``, what `recon.models.load_checkpoint` needs
to rebuild the model with plain torch (STYLE item 13). A network with deep supervision
(auxiliary maps in training) adds `recon.nn.deep_supervision_loss` on OPD / opd_scale_nm.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor

from common.errors import KnownError
from recon.losses import MaskedMSELoss, OPDLoss, remove_piston
from recon.models import CHECKPOINT_KEY, ModelOutput, ReconModel
from recon.nn.unet import deep_supervision_loss
from recon.train.config import TrainConfig

__all__ = ["LitRecon", "NonFiniteLossError", "compiled"]


def compiled(model: torch.nn.Module) -> Callable[..., Any]:
    """`torch.compile(model)` that falls back to eager execution if compiling fails.

    Dynamo's `suppress_errors` runs a frame eagerly when its compilation raises (no
    C compiler, an unsupported op, an old GPU), with one warning from torch; the
    model's parameters and state_dict are untouched (the compiled wrapper is not kept
    as a submodule).
    """
    import torch._dynamo

    torch._dynamo.config.suppress_errors = True
    return torch.compile(model)


class NonFiniteLossError(KnownError, RuntimeError):
    """The training loss became NaN or infinite; the run stops, the last good checkpoint stays."""


class LitRecon(pl.LightningModule):
    """Trains a `ReconModel` (intensities (B, L, H, W) -> OPD (B, 1, H, W) [nm]).

    Args:
        cfg: the resolved training config.
        model: the network with its normalisation.
        pupil: (H, W) pupil transmission: the loss weights (gray edge included).
        meta: JSON-able description saved in every checkpoint (see `recon.train`).
    """

    def __init__(
        self, cfg: TrainConfig, model: ReconModel, pupil: Tensor, meta: dict[str, Any]
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = model
        self.meta = meta
        self.register_buffer("pupil", pupil.float(), persistent=False)
        self.loss_fn = OPDLoss(cfg.loss.w_npcc, cfg.loss.w_pix, cfg.loss.pixel)
        self.mse = MaskedMSELoss()

    def on_fit_start(self) -> None:
        """GPU speed: channels_last memory layout, and `torch.compile` when configured."""
        self._channels_last = self.device.type == "cuda"
        if self._channels_last:
            self.model.to(memory_format=torch.channels_last)
        enabled = self.cfg.compile if self.cfg.compile is not None else self.device.type == "cuda"
        # kept outside the module tree: the compiled wrapper adds no state_dict keys
        object.__setattr__(self, "_run", compiled(self.model) if enabled else self.model)

    def _predict(self, intensity: Tensor) -> ModelOutput:
        """The model's forward, compiled when configured (falls back to eager on failure)."""
        if getattr(self, "_channels_last", False):
            intensity = intensity.contiguous(memory_format=torch.channels_last)
        run = getattr(self, "_run", None)
        return (self.model if run is None else run)(intensity)

    def forward(self, intensity: Tensor) -> Tensor:
        return self.model(intensity)  # (B, L, H, W) -> (B, 1, H, W) [nm]

    def loss_terms(self, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        """OPD loss terms of a batch (intensity (B, L, H, W), opd (B, 1, H, W) [nm], ...).

        Keys: "loss" (weighted total), "npcc", "pixel" (on OPD / opd_scale_nm) and
        "rms_nm" (RMS residual over the pupil pixels of the batch, piston removed); with
        deep supervision also "aux" (its weight in the total: `loss.w_aux`).
        """
        intensity, opd = batch[0], batch[1]
        scale = self.model.opd_scale_nm
        pred = self._predict(intensity)
        aux: list[Tensor] = []
        if isinstance(pred, tuple):  # deep supervision: (out, [aux maps]) in training
            pred, aux = pred
        terms = self.loss_fn.terms(pred.float() / scale, opd.float() / scale, self.pupil)
        if aux:
            target = opd.float() / scale
            terms["aux"] = deep_supervision_loss(
                [a.float() / scale for a in aux], target, F.mse_loss
            )
            terms["loss"] = terms["loss"] + self.cfg.loss.w_aux * terms["aux"]
        with torch.no_grad():
            residual = remove_piston(pred.float() - opd.float(), self.pupil)
            terms["rms_nm"] = self.mse(residual, torch.zeros_like(residual), self.pupil).sqrt()
        return terms

    def _check_finite(self, loss: Tensor) -> None:
        """Stop the run (on every process) when `loss` is NaN or infinite."""
        finite = bool(torch.isfinite(loss.detach()).item())
        if self.trainer.strategy.reduce_boolean_decision(finite, all=True):
            return
        ckpt = getattr(self.trainer.checkpoint_callback, "last_model_path", "") or "(none yet)"
        raise NonFiniteLossError(
            f"training loss is {loss.item()} at epoch {self.current_epoch}, step "
            f"{self.global_step}: run stopped; last good checkpoint: {ckpt}. Lower the "
            "learning rate, keep gradient clipping on, or check the data for NaN/inf"
        )

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        terms = self.loss_terms(batch)
        self._check_finite(terms["loss"])
        n = batch[0].shape[0]
        self.log(
            "train/loss", terms["loss"], prog_bar=True, on_step=True, on_epoch=True, batch_size=n
        )
        self.log("train/npcc", terms["npcc"], on_step=False, on_epoch=True, batch_size=n)
        self.log("train/pixel", terms["pixel"], on_step=False, on_epoch=True, batch_size=n)
        if "aux" in terms:
            self.log("train/aux", terms["aux"], on_step=False, on_epoch=True, batch_size=n)
        return terms["loss"]

    def validation_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        terms = self.loss_terms(batch)
        n = batch[0].shape[0]
        for key in ("loss", "npcc", "pixel", "rms_nm"):
            self.log(
                f"val/{key}",
                terms[key],
                prog_bar=key in ("loss", "rms_nm"),
                sync_dist=True,
                batch_size=n,
            )

    def configure_optimizers(self) -> Any:
        opt = self.cfg.optim
        on_gpu = all(p.is_cuda for p in self.parameters())
        optimizer = torch.optim.AdamW(
            self.parameters(), lr=opt.lr, weight_decay=opt.weight_decay, fused=on_gpu or None
        )  # fused: one kernel for the whole update on a GPU
        if opt.schedule == "none":
            return optimizer
        if opt.schedule == "cosine" and self.cfg.budget_s is not None:
            # a wall-time budget: the cosine follows the share of the budget spent, per step
            self._clock_start = time.monotonic()
            scheduler: Any = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda _step: self.cosine_of(self.budget_spent())
            )
            return {
                "optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
            }
        if opt.schedule == "cosine":
            # closed form in the epoch, T = the trainer's max_epochs at each step: a resume
            # with more epochs stretches the schedule instead of restarting it
            scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda epoch: self.cosine_factor(epoch)
            )
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler}}
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            factor=opt.plateau_factor,
            patience=opt.plateau_patience,
            min_lr=opt.min_lr,
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": "val/loss"},
        }

    def cosine_factor(self, epoch: int) -> float:
        """LR / peak LR at `epoch` of a cosine decay to `min_lr` over the run's max_epochs."""
        total = max(int(self.trainer.max_epochs or 1), 1)
        return self.cosine_of(epoch / total)

    def cosine_of(self, progress: float) -> float:
        """LR / peak LR after a share `progress` in [0, 1] of the run (cosine to `min_lr`)."""
        floor = self.cfg.optim.min_lr / self.cfg.optim.lr
        progress = min(max(progress, 0.0), 1.0)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    def budget_spent(self) -> float:
        """Share of the wall-time budget (`cfg.budget_s`) spent since the optimiser was built."""
        assert self.cfg.budget_s is not None
        return (time.monotonic() - self._clock_start) / self.cfg.budget_s

    def on_train_start(self) -> None:
        # after a resume: the learning rate of the current epoch under this run's schedule
        if self.cfg.optim.schedule != "cosine" or self.cfg.budget_s is not None:
            return
        for config in self.trainer.lr_scheduler_configs:
            sched = config.scheduler
            for group, base in zip(sched.optimizer.param_groups, sched.base_lrs, strict=True):
                group["lr"] = base * self.cosine_factor(sched.last_epoch)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = self.meta
