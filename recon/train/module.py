"""LightningModule of `recon train`: one function per phase, NaN guard, self-describing checkpoints.

The loss is `recon.losses.OPDLoss` (pupil-masked NPCC + masked MSE/L1, piston removed)
on OPD / opd_scale_nm, so that its pixel term is of order 1 whatever the data. Every
checkpoint carries, under the key ``"zwfs"``, what `recon.models.load_checkpoint` needs
to rebuild the model with plain torch. A network with deep supervision
(auxiliary maps in training) adds `recon.nn.deep_supervision_loss` on OPD / opd_scale_nm.
"""

from __future__ import annotations

import math
import time
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor

from common.compiled import CompiledModule, compile_status
from common.errors import KnownError
from common.hardware import HardwarePlan
from recon.losses import MaskedMSELoss, OPDLoss, remove_piston
from recon.models import CHECKPOINT_KEY, ModelOutput, ReconModel
from recon.nn.unet import deep_supervision_loss
from recon.train.config import TrainConfig

__all__ = ["LitRecon", "NonFiniteLossError"]


class NonFiniteLossError(KnownError, RuntimeError):
    """The training loss became NaN or infinite; the run stops, the last good checkpoint stays."""


class LitRecon(pl.LightningModule):
    """Trains a `ReconModel` (intensities (B, L, H, W) -> OPD (B, 1, H, W) [nm]).

    Args:
        cfg: the resolved training config.
        model: the network with its normalisation.
        pupil: (H, W) pupil transmission: the loss weights (gray edge included).
        meta: JSON-able description saved in every checkpoint (see `recon.train`).
        plan: the hardware plan (optimizer, memory format, compile, host syncs); None:
            `cfg.hardware()`, the plan of the configured accelerator.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        model: ReconModel,
        pupil: Tensor,
        meta: dict[str, Any],
        plan: HardwarePlan | None = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.plan = plan if plan is not None else cfg.hardware()
        self.model = model
        self.meta = meta
        self.register_buffer("pupil", pupil.float(), persistent=False)
        self.loss_fn = OPDLoss(cfg.loss.w_npcc, cfg.loss.w_pix, cfg.loss.pixel)
        self.mse = MaskedMSELoss()
        self._first_bad_step: Tensor | None = None  # on the device: no host sync per step
        # kept outside the module tree: the compiled wrapper adds no state_dict keys
        self.__dict__["_run"] = None

    def setup(self, stage: str) -> None:
        """Memory format and compilation, before the strategy moves and wraps the model
        (DDP's gradient buckets must see the parameters' final strides)."""
        if self._run is not None:
            return
        if self.plan.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.__dict__["_run"] = CompiledModule(self.model) if self.plan.compile else self.model

    @property
    def compile_status(self) -> dict[str, Any]:
        """What the training steps ran: compiled graphs, or why they ran eagerly."""
        return compile_status(self._run)

    def _predict(self, intensity: Tensor) -> ModelOutput:
        """The model's forward, compiled when the plan says so (eager after a failure)."""
        if self.plan.channels_last:
            intensity = intensity.contiguous(memory_format=torch.channels_last)
        return (self.model if self._run is None else self._run)(intensity)

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

    def _watch_finite(self, loss: Tensor) -> None:
        """Note the first step whose loss is NaN or infinite, on the device; check it on
        the host every `plan.sync_every` steps (a GPU then runs ahead between checks)."""
        bad = ~torch.isfinite(loss.detach())
        if self._first_bad_step is None:
            self._first_bad_step = torch.full((), -1, dtype=torch.long, device=loss.device)
        first = self._first_bad_step
        self._first_bad_step = torch.where(bad & (first < 0), self.global_step, first)
        if (self.global_step + 1) % self.plan.sync_every == 0:
            self._check_finite()

    def _check_finite(self) -> None:
        """Stop the run (on every process) once any training loss has been non-finite."""
        first = -1 if self._first_bad_step is None else int(self._first_bad_step)
        if self.trainer.strategy.reduce_boolean_decision(first < 0, all=True):
            return
        ckpt = getattr(self.trainer.checkpoint_callback, "last_model_path", "") or "(none yet)"
        where = f"step {first}" if first >= 0 else "another process's step"
        raise NonFiniteLossError(
            f"training loss is not finite from {where} (epoch {self.current_epoch}): run "
            f"stopped; last good checkpoint: {ckpt}. Lower the learning rate, keep gradient "
            "clipping on, or check the data for NaN/inf"
        )

    def on_validation_epoch_start(self) -> None:
        if not self.trainer.sanity_checking:
            self._check_finite()  # before a checkpoint can be written

    def on_train_epoch_end(self) -> None:
        self._check_finite()  # runs before ModelCheckpoint's epoch-end save

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        terms = self.loss_terms(batch)
        self._watch_finite(terms["loss"])
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
        optimizer = torch.optim.AdamW(
            self.parameters(),
            lr=opt.lr,
            weight_decay=opt.weight_decay,
            **self.plan.optimizer_kwargs,
        )
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

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip the gradient norm to `gradient_clip_val` in every precision, fused or not.

        Lightning's mixed-precision plugin refuses to clip for an optimizer that unscales
        inside its step (fused AdamW), even in bf16, which has no scaler. torch's own
        contract does allow it: `GradScaler.unscale_`, then clip, then the scaler's step,
        which passes no scale to a fused step whose gradients are already unscaled. So:
        unscale here when a scaler is there (16-mixed; Lightning has done it already for
        other optimizers, and a second `unscale_` would raise), then clip.
        """
        if not gradient_clip_val:
            return
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        if scaler is not None and getattr(optimizer, "_step_supports_amp_scaling", False):
            scaler.unscale_(optimizer)
        if gradient_clip_algorithm == "value":
            torch.nn.utils.clip_grad_value_(self.parameters(), gradient_clip_val)
        else:
            torch.nn.utils.clip_grad_norm_(self.parameters(), gradient_clip_val)

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
