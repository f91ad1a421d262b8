"""Regression losses for OPD maps: NPCC, masked MSE / L1, piston removal, combined OPD loss.

Maps are (B, 1, H, W) or (B, H, W), in nm. A mask is (H, W), (B, H, W) or (B, 1, H, W),
bool or float; float values weight the pixels (a gray-edged pupil transmission works
as is). Pixels where the mask is 0 do not change any loss here.

NPCC (negative Pearson correlation coefficient) is the loss of PhENN (Sinha et al.,
Optica 4, 1117, 2017) and of Kang et al.'s recurrent phase-retrieval networks; it is
blind to scale and offset, so the OPD loss adds a pixel loss that keeps the output in
nm. Piston is unobservable for a ZWFS, hence removed first.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from recon.losses._mask import as_maps, mask_weights, weighted_mean
from recon.losses._registry import register_loss

__all__ = [
    "MaskedL1Loss",
    "MaskedMSELoss",
    "NPCCLoss",
    "OPDLoss",
    "npcc",
    "remove_piston",
]

_DIMS = (1, 2)  # spatial dims of a (B, H, W) map


def remove_piston(x: Tensor, mask: Tensor | None = None) -> Tensor:
    """Subtract from each sample its (weighted) mean over the mask.

    Args:
        x: maps (B, 1, H, W) or (B, H, W), any unit (nm here).
        mask: (H, W), (B, H, W) or (B, 1, H, W), bool or float weights; None = all pixels.

    Returns:
        Same shape and unit as `x`; the mean over the mask is 0 for every sample. Pixels
        outside the mask are shifted by the same constant (their values are not zeroed).
    """
    maps = as_maps(x, "x")
    w = mask_weights(mask, maps)
    piston = weighted_mean(maps, w, _DIMS)  # (B,)
    return x - piston.view(-1, *([1] * (x.ndim - 1)))


def npcc(pred: Tensor, target: Tensor, mask: Tensor | None = None, eps: float = 1e-12) -> Tensor:
    """Negative Pearson correlation coefficient of each sample over the masked pixels.

    NPCC = -cov(p, t) / sqrt(var(p) var(t) + eps), moments weighted by the mask.
    NPCC(x, x) = -1, NPCC(x, -x) = +1, NPCC(a x + b, x) = -1 for a > 0; a constant map
    gives 0 (not NaN) and a finite gradient.

    Args:
        pred, target: (B, 1, H, W) or (B, H, W), same unit (nm).
        mask: see `remove_piston`.
        eps: added to var(p) var(t), unit of the input to the 4th power (nm^4).

    Returns:
        (B,) dimensionless, in [-1, 1].
    """
    p, t = as_maps(pred, "pred"), as_maps(target, "target")
    w = mask_weights(mask, p)
    pc = p - weighted_mean(p, w, _DIMS)[:, None, None]
    tc = t - weighted_mean(t, w, _DIMS)[:, None, None]
    cov = weighted_mean(pc * tc, w, _DIMS)
    var_p = weighted_mean(pc * pc, w, _DIMS)
    var_t = weighted_mean(tc * tc, w, _DIMS)
    return -cov / torch.sqrt(var_p * var_t + eps)


def _check_reduction(reduction: str) -> None:
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


@register_loss("npcc")
class NPCCLoss(nn.Module):
    """NPCC loss (see `npcc`): per sample over the masked pixels, then mean over the batch.

    Shapes: pred, target (B, 1, H, W) or (B, H, W) in nm; mask as in `remove_piston`.
    Returns a dimensionless scalar in [-1, 1] (reduction "mean") or (B,) ("none").
    """

    def __init__(self, eps: float = 1e-12, reduction: Literal["mean", "none"] = "mean") -> None:
        super().__init__()
        _check_reduction(reduction)
        self.eps = eps
        self.reduction = reduction

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        values = npcc(pred, target, mask, self.eps)
        return values.mean() if self.reduction == "mean" else values


class _MaskedPixelLoss(nn.Module):
    """Pixel loss averaged over the masked pixels (weighted mean)."""

    def __init__(self, reduction: Literal["mean", "none"] = "mean") -> None:
        super().__init__()
        _check_reduction(reduction)
        self.reduction = reduction

    def _pixel(self, diff: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        p, t = as_maps(pred, "pred"), as_maps(target, "target")
        w = mask_weights(mask, p)
        err = self._pixel(p - t)  # (B, H, W)
        if self.reduction == "none":
            return weighted_mean(err, w, _DIMS)  # (B,)
        return weighted_mean(err, w)  # pooled over every masked pixel of the batch


@register_loss("masked_mse")
class MaskedMSELoss(_MaskedPixelLoss):
    """Mean squared error over the masked pixels.

    Shapes: pred, target (B, 1, H, W) or (B, H, W) in nm; mask as in `remove_piston`.
    Returns nm^2: a scalar pooled over all masked pixels of the batch ("mean"), or the
    per-sample means (B,) ("none").
    """

    def _pixel(self, diff: Tensor) -> Tensor:
        return diff.square()


@register_loss("masked_l1")
class MaskedL1Loss(_MaskedPixelLoss):
    """Mean absolute error over the masked pixels.

    Shapes: pred, target (B, 1, H, W) or (B, H, W) in nm; mask as in `remove_piston`.
    Returns nm: a scalar pooled over all masked pixels of the batch ("mean"), or the
    per-sample means (B,) ("none").
    """

    def _pixel(self, diff: Tensor) -> Tensor:
        return diff.abs()


@register_loss("opd")
class OPDLoss(nn.Module):
    """OPD loss = w_npcc * NPCC + w_pix * (masked MSE or L1), piston removed from both maps.

    NPCC shapes the map, the pixel term fixes its scale in nm (NPCC alone is blind to
    scale). Both are computed after `remove_piston` on prediction and target,
    so a constant offset of either map does not change the loss.

    Args:
        w_npcc: weight of NPCC (dimensionless term in [-1, 1]); >= 0.
        w_pix: weight of the pixel term; >= 0. The MSE is in nm^2 and the L1 in nm, so
            e.g. w_pix = 1 / (100 nm)^2 puts a 100 nm RMS error on the scale of NPCC.
        pixel: "mse" or "l1".
        eps: NPCC denominator guard (nm^4).

    Shapes: pred, target (B, 1, H, W) or (B, H, W) in nm; mask (H, W), (B, H, W) or
    (B, 1, H, W). Returns a scalar.
    """

    def __init__(
        self,
        w_npcc: float = 1.0,
        w_pix: float = 1.0,
        pixel: Literal["mse", "l1"] = "mse",
        eps: float = 1e-12,
    ) -> None:
        super().__init__()
        if w_npcc < 0 or w_pix < 0 or w_npcc + w_pix == 0:
            raise ValueError(
                f"w_npcc and w_pix must be >= 0 and not both 0, got {w_npcc} and {w_pix}"
            )
        if pixel not in ("mse", "l1"):
            raise ValueError(f"pixel must be 'mse' or 'l1', got {pixel!r}")
        self.w_npcc = float(w_npcc)
        self.w_pix = float(w_pix)
        self.pixel = pixel
        self.npcc = NPCCLoss(eps=eps)
        self.pixel_loss: nn.Module = MaskedMSELoss() if pixel == "mse" else MaskedL1Loss()

    def terms(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> dict[str, Tensor]:
        """The weighted total and its parts, for logging: keys "loss", "npcc", "pixel"."""
        p = remove_piston(pred, mask)
        t = remove_piston(target, mask)
        npcc_term = self.npcc(p, t, mask)
        pixel_term = self.pixel_loss(p, t, mask)
        loss = self.w_npcc * npcc_term + self.w_pix * pixel_term
        return {"loss": loss, "npcc": npcc_term.detach(), "pixel": pixel_term.detach()}

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.terms(pred, target, mask)["loss"]
