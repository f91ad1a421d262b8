"""`recon distill`: train a small student reconstructor from a trained teacher.

Loss of the student (Hinton et al. 2015 for the response term; a normalised feature
term after Liu et al., arXiv:2207.05256, 2022, see `recon.losses.NormalizedFeatureLoss`):

    loss = OPDLoss(student, truth)                                   # task, as recon train
         + w_response * ResponseMSE(student, teacher)                # OPD / opd_scale_nm
         + w_feature  * NormalizedFeatureLoss(connector(f_s), f_t)   # deepest features

The teacher is frozen (eval mode, no gradient, not saved with the student). The
student gets the teacher's wavelengths, pupil sampling and normalisation statistics, so
the two see identical inputs; data that do not match the teacher are refused. The
features f_s, f_t are the deepest encoder features (see `deepest_feature`), taken with
forward hooks; a 1x1 convolution (the connector, trained with the student) maps the
student's channels to the teacher's. The response term compares OPD / opd_scale_nm
(piston removed), of order 1 like the task's pixel term.

The run folder ``<out_dir>/<arch>-distill-<time>/`` is a `recon train` run folder
(``config.yaml`` of the student, ``checkpoints/``, ``metrics.csv``) plus ``distill.yaml``;
its checkpoints load with `recon.models.load_checkpoint` and their metadata names the
teacher and the distillation weights. ``val/loss`` (what picks ``best.ckpt``) is the task
loss against the ground truth, as in `recon train`; the full objective is ``val/distill``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
import yaml
from torch import Tensor, nn

from common.config import ConfigError
from recon.losses import NormalizedFeatureLoss, ResponseMSE
from recon.models import (
    NormStats,
    ReconModel,
    WavelengthGRUNet,
    build_model,
    load_checkpoint,
    resolve_checkpoint,
)
from recon.nn.unet import UNet
from recon.train.config import TrainConfig
from recon.train.data import DatasetMismatchError, load_data
from recon.train.module import LitRecon
from recon.train.run import check_size, checkpoint_meta, fit_run, new_run_dir, resolve

__all__ = [
    "DistillConfig",
    "FeatureTap",
    "LitDistill",
    "TeacherMismatchError",
    "deepest_feature",
    "distill",
    "teacher_checkpoint",
]

FEATURE_LOSS = "normalized_feature"


class TeacherMismatchError(DatasetMismatchError):
    """The data (or the student config) do not match what the teacher was trained on."""


@dataclass(frozen=True)
class DistillConfig:
    """The distillation part of a run (saved as ``distill.yaml``; the rest is `TrainConfig`).

    Attributes:
        teacher: the teacher's checkpoint file.
        w_response: weight of the response term (MSE of OPD / opd_scale_nm, >= 0).
        w_feature: weight of the normalised feature term (dimensionless, >= 0).
    """

    teacher: Path
    w_response: float = 1.0
    w_feature: float = 0.1

    def __post_init__(self) -> None:
        for name in ("w_response", "w_feature"):
            value = getattr(self, name)
            if not (value >= 0 and value < float("inf")):
                raise ConfigError(f"distillation {name} must be a finite number >= 0, got {value}")

    def to_dict(self) -> dict[str, Any]:
        """JSON/YAML-able dict."""
        return {**asdict(self), "teacher": str(self.teacher), "feature_loss": FEATURE_LOSS}


def teacher_checkpoint(run_or_ckpt: str | os.PathLike) -> Path:
    """The teacher's checkpoint file (`recon.models.resolve_checkpoint`), absolute."""
    return resolve_checkpoint(run_or_ckpt).absolute()


def deepest_feature(net: nn.Module) -> tuple[nn.Module, int, Callable[[Any], Tensor]]:
    """The module whose output is `net`'s deepest (coarsest) encoder feature.

    - `WavelengthGRUNet`: the final hidden state of the coarsest-scale ConvGRU (the last
      call of its cell, or its bidirectional fusion), fused over the wavelengths;
    - networks built on `recon.nn.UNet` (phenn, unet): the bottleneck's output;
    - any other network with an ``encoder`` that returns a list of features (timm_unet):
      the last feature of that list.

    Returns:
        (module, channels, select): hook `module`; ``select(output)`` is the feature
        (B, channels, h, w).
    """
    if isinstance(net, ReconModel):
        net = net.net
    if isinstance(net, WavelengthGRUNet):
        module = net.fuse[-1] if net.bidirectional else net.cells[-1]
        return module, net.cells[-1].hidden_ch, lambda out: out
    unets = [m for m in net.modules() if isinstance(m, UNet)]
    if len(unets) == 1:
        return unets[0].bottleneck, unets[0].widths[-1], lambda out: out
    encoder = getattr(net, "encoder", None)
    channels = getattr(encoder, "out_channels", None)
    if isinstance(encoder, nn.Module) and isinstance(channels, Sequence) and channels:
        return encoder, int(channels[-1]), lambda out: out[-1]
    raise ValueError(
        f"cannot find the deepest encoder feature of {type(net).__name__}: feature "
        "distillation supports WavelengthGRUNet, recon.nn.UNet networks and list encoders"
    )


class FeatureTap:
    """Forward hook that keeps the deepest feature of `net`'s latest forward pass.

    A module called several times per forward (a ConvGRU cell, once per wavelength)
    leaves its last output: the final hidden state.
    """

    def __init__(self, net: nn.Module) -> None:
        module, self.channels, self._select = deepest_feature(net)
        self._value: Tensor | None = None
        self.handle = module.register_forward_hook(self._keep)

    def _keep(self, module: nn.Module, args: Any, output: Any) -> None:
        self._value = self._select(output)

    def pop(self) -> Tensor:
        """The kept feature (B, C, h, w), released so that its graph can be freed."""
        if self._value is None:
            raise RuntimeError("no feature captured: run the network first")
        value, self._value = self._value, None
        return value


def _match_size(feat: Tensor, size: Sequence[int]) -> Tensor:
    """(B, C, h, w) -> (B, C, *size): average pooling down, bilinear interpolation up."""
    if tuple(feat.shape[-2:]) == tuple(size):
        return feat
    if all(a >= b for a, b in zip(feat.shape[-2:], size, strict=True)):
        return F.adaptive_avg_pool2d(feat, tuple(size))
    return F.interpolate(feat, size=tuple(size), mode="bilinear", align_corners=False)


class LitDistill(LitRecon):
    """`LitRecon` whose loss adds response and feature distillation from a frozen teacher.

    Args:
        cfg, student, pupil, meta: as `LitRecon` (the student is trained and saved).
        teacher: trained `ReconModel` with the student's wavelengths and normalisation.
        w_response, w_feature: weights of the distillation terms.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        student: ReconModel,
        teacher: ReconModel,
        pupil: Tensor,
        meta: dict[str, Any],
        w_response: float = 1.0,
        w_feature: float = 0.1,
    ) -> None:
        super().__init__(cfg, student, pupil, meta)
        teacher.eval().requires_grad_(False)
        # not a submodule: outside the optimiser, the checkpoints and train()/eval()
        self.__dict__["teacher"] = teacher
        self.w_response, self.w_feature = float(w_response), float(w_feature)
        self.student_tap, self.teacher_tap = FeatureTap(student), FeatureTap(teacher)
        self.response = ResponseMSE(remove_piston=True)
        self.feature = NormalizedFeatureLoss(self.student_tap.channels, self.teacher_tap.channels)
        self._pred: Tensor | None = None
        student.register_forward_hook(self._keep_pred)
        self._last: dict[str, Tensor] = {}

    def _keep_pred(self, module: nn.Module, args: Any, output: Tensor) -> None:
        self._pred = output

    def _apply(self, fn: Callable, recurse: bool = True) -> LitDistill:  # .to(), .cuda()
        super()._apply(fn, recurse)
        self.teacher._apply(fn, recurse)
        return self

    def loss_terms(self, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        """`LitRecon.loss_terms` plus "task" (the OPD loss), "response", "feature";
        "loss" is task + w_response * response + w_feature * feature."""
        terms = super().loss_terms(batch)  # student forward: the hooks keep OPD and feature
        pred, self._pred = self._pred, None
        s_feat = self.student_tap.pop()
        with torch.no_grad():
            t_opd = self.teacher(batch[0])  # (B, L, H, W) -> (B, 1, H, W) [nm]
        t_feat = self.teacher_tap.pop()
        assert pred is not None
        scale = self.model.opd_scale_nm
        response = self.response(pred.float() / scale, t_opd.float() / scale, self.pupil)
        s_feat = _match_size(s_feat.float(), t_feat.shape[-2:])
        feature = self.feature(s_feat, t_feat.float())
        task = terms["loss"]
        terms.update(
            task=task,
            response=response,
            feature=feature,
            loss=task + self.w_response * response + self.w_feature * feature,
        )
        self._last = {k: terms[k].detach() for k in ("task", "response", "feature")}
        return terms

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        loss = super().training_step(batch, batch_idx)
        for key, value in self._last.items():
            self.log(f"train/{key}", value, on_step=False, on_epoch=True, batch_size=len(batch[0]))
        return loss

    def validation_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        terms = self.loss_terms(batch)
        terms["distill"], terms["loss"] = terms["loss"], terms["task"]  # best.ckpt: the truth
        for key in ("loss", "npcc", "pixel", "rms_nm", "response", "feature", "distill"):
            self.log(
                f"val/{key}",
                terms[key],
                prog_bar=key in ("loss", "rms_nm"),
                sync_dist=True,
                batch_size=len(batch[0]),
            )


def _teacher_config(cfg: TrainConfig, meta: dict[str, Any], path: Path) -> TrainConfig:
    """`cfg` with the teacher's wavelengths [um] and sampling; refuses a contradiction."""
    wl_um = [round(float(w) * 1e6, 6) for w in meta["wavelengths_m"]]
    npix = int(meta["npix"])
    if cfg.data.wavelengths_um is not None and cfg.data.wavelengths_um != wl_um:
        raise TeacherMismatchError(
            f"data.wavelengths_um {cfg.data.wavelengths_um} differs from the teacher's {wl_um} um "
            f"({path}); the student must use the teacher's wavelengths"
        )
    if cfg.data.npix is not None and cfg.data.npix != npix:
        raise TeacherMismatchError(f"data.npix {cfg.data.npix} differs from the teacher's {npix}")
    return cfg.with_overrides(**{"data.wavelengths_um": wl_um, "data.npix": npix})


def distill(
    teacher: str | os.PathLike,
    cfg: TrainConfig,
    w_response: float = 1.0,
    w_feature: float = 0.1,
    callbacks: Sequence[pl.Callback] = (),
    **trainer_overrides: Any,
) -> Path:
    """Train student `cfg.arch` from `teacher` on `cfg.data`; returns the run folder.

    Args:
        teacher: the teacher's run folder (its ``checkpoints/best.ckpt``) or checkpoint.
        cfg: the student's training config (arch, model_kwargs, data, optim, epochs...).
        w_response, w_feature: weights of the distillation terms (see module docstring).
        callbacks, **trainer_overrides: as `recon.train.train`.

    Raises:
        TeacherMismatchError: the data lack the teacher's wavelengths or sampling.
    """
    dcfg = DistillConfig(teacher_checkpoint(teacher), w_response, w_feature)
    teacher_model, tmeta = load_checkpoint(dcfg.teacher)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    cfg = _teacher_config(cfg, tmeta, dcfg.teacher)
    try:
        data = load_data(cfg)
    except DatasetMismatchError as err:
        wanted = (
            f"{', '.join(f'{w:g}' for w in cfg.data.wavelengths_um or [])} um, {cfg.data.npix} px"
        )
        reason = str(err).removesuffix(" (config data.wavelengths_um)")
        raise TeacherMismatchError(
            f"the data do not fit teacher {dcfg.teacher} ({wanted}): {reason}"
        ) from None
    cfg = resolve(cfg, data)
    n_wl = len(data.source.wavelengths_m)
    stats = NormStats.from_dict(tmeta["normalization"])
    student = build_model(cfg.arch, cfg.kwargs, n_wl, stats)
    check_size(student.net, data.source.npix)
    run_dir = new_run_dir(cfg, tag="-distill")  # <arch>-distill-<time>
    meta = checkpoint_meta(cfg, data, stats, n_wl)
    meta["teacher"] = str(dcfg.teacher)
    meta["distillation"] = {
        **dcfg.to_dict(),
        "teacher_arch": tmeta["arch"],
        "teacher_model_kwargs": tmeta["model_kwargs"],
    }
    lit = LitDistill(
        cfg, student, teacher_model, data.source.pupil, meta, dcfg.w_response, dcfg.w_feature
    )
    distill_yaml = yaml.safe_dump(dcfg.to_dict(), sort_keys=False)
    return fit_run(
        cfg, lit, data, run_dir, callbacks, extra_files={"distill.yaml": distill_yaml},
        **trainer_overrides,
    )  # fmt: skip
