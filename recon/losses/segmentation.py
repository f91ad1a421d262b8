"""Segmentation / classification losses, all mask-aware.

Logits are raw scores (no sigmoid/softmax applied). A mask selects the pixels that
count: for dense inputs (B, C, H, W) or (B, H, W) it is (H, W), (B, H, W) or
(B, 1, H, W), bool or float weights; pixels where it is 0 change nothing.

- `CrossEntropyLoss`: torch's cross-entropy with a mask.
- `WeightedBCELoss`: BCE with pos_weight = n_neg / n_pos counted on the batch, or given.
- `SigmoidFocalLoss`: Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017.
- `SoftDiceLoss`, `SoftIoULoss`: Milletari et al. 2016 (V-Net) soft Dice and the soft
  Jaccard index (Rahman & Wang 2016), binary (sigmoid) or multi-class (softmax).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recon.losses._mask import TINY, as_maps, mask_weights
from recon.losses._registry import register_loss

__all__ = [
    "CrossEntropyLoss",
    "SigmoidFocalLoss",
    "SoftDiceLoss",
    "SoftIoULoss",
    "WeightedBCELoss",
    "pos_weight_from_counts",
    "sigmoid_focal_loss",
]

Reduction = Literal["mean", "sum", "none"]


def _elementwise_mask(mask: Tensor | None, ref: Tensor) -> Tensor:
    """Mask weights for an element-wise loss: (B, C, H, W) inputs get a spatial mask."""
    return mask_weights(mask, ref, channels=ref.ndim == 4)


def _reduce(loss: Tensor, w: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return (loss * w).sum() / w.sum().clamp_min(TINY)
    if reduction == "sum":
        return (loss * w).sum()
    if reduction == "none":
        return loss * w
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


@register_loss("cross_entropy")
class CrossEntropyLoss(nn.Module):
    """Cross-entropy (`torch.nn.functional.cross_entropy`) averaged over the masked pixels.

    Shapes: logits (B, C) or (B, C, H, W); target class indices (B,) / (B, H, W) (int64)
    or class probabilities of the logits' shape; mask (B,) for (B, C) logits, else (H, W),
    (B, H, W) or (B, 1, H, W). Returns a scalar in nats. Without a mask it equals torch's
    "mean" (weighted by the class weights of the targets, as torch does).
    """

    def __init__(
        self,
        weight: Tensor | None = None,
        ignore_index: int = -100,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing

    def forward(self, logits: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        loss = F.cross_entropy(
            logits,
            target,
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction="none",
            label_smoothing=self.label_smoothing,
        )  # (B, *S)
        w = mask_weights(mask, loss)
        denom = w
        if not target.is_floating_point():  # indices: torch's mean divides by sum weight[y]
            valid = target != self.ignore_index
            denom = w * valid
            if self.weight is not None:  # `loss` already carries weight[y]
                denom = denom * self.weight[target.clamp_min(0) * valid]
        return (loss * w).sum() / denom.sum().clamp_min(TINY)


def pos_weight_from_counts(target: Tensor, mask: Tensor | None = None) -> Tensor:
    """pos_weight = n_neg / n_pos over the masked elements of a binary target (scalar).

    Counts are mask-weighted. With no positive element the value is 1 (it then
    multiplies nothing). The result carries no gradient.
    """
    t = target.detach().float()
    w = _elementwise_mask(mask, t)
    n_pos = (w * t).sum()
    n_neg = (w * (1 - t)).sum()
    return torch.where(n_pos > 0, n_neg / n_pos.clamp_min(TINY), torch.ones_like(n_pos))


@register_loss("weighted_bce")
class WeightedBCELoss(nn.Module):
    """Binary cross-entropy with logits, positives weighted by pos_weight.

    -[pos_weight * t * log(sigmoid(x)) + (1 - t) * log(1 - sigmoid(x))], mean over the
    masked elements (nats). pos_weight = n_neg / n_pos counted on each batch (inside the
    mask) when not given, which balances rare foreground.

    Shapes: logits and target the same shape (B, ...), target in [0, 1]; for (B, C, H, W)
    the mask is spatial. Returns a scalar.
    """

    def __init__(self, pos_weight: float | Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer(
            "pos_weight", None if pos_weight is None else torch.as_tensor(pos_weight).float()
        )

    def forward(self, logits: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        target = target.to(logits.dtype)
        pw = (
            self.pos_weight if self.pos_weight is not None else pos_weight_from_counts(target, mask)
        )
        loss = F.binary_cross_entropy_with_logits(
            logits, target, pos_weight=pw.to(logits), reduction="none"
        )
        return _reduce(loss, _elementwise_mask(mask, loss), "mean")


def sigmoid_focal_loss(
    logits: Tensor,
    target: Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
    reduction: Reduction = "mean",
    mask: Tensor | None = None,
) -> Tensor:
    """Sigmoid focal loss (Lin et al. 2017, eq. 5), as `torchvision.ops.sigmoid_focal_loss`.

    FL = -alpha_t (1 - p_t)^gamma log(p_t), p = sigmoid(logits),
    p_t = p t + (1 - p)(1 - t), alpha_t = alpha t + (1 - alpha)(1 - t); alpha < 0
    disables the alpha weighting. gamma = 0 gives alpha-weighted BCE.

    Shapes: logits and target the same shape; mask as for `WeightedBCELoss`. Reduction
    "mean" / "sum" over the masked elements, "none" the element-wise loss times the mask.
    """
    target = target.to(logits.dtype)
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = loss * (alpha * target + (1 - alpha) * (1 - target))
    return _reduce(loss, _elementwise_mask(mask, loss), reduction)


@register_loss("sigmoid_focal")
class SigmoidFocalLoss(nn.Module):
    """Module form of `sigmoid_focal_loss` (Lin et al. 2017); returns nats."""

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0, reduction: Reduction = "mean"):
        super().__init__()
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.alpha = alpha
        self.gamma = gamma
        self.reduction = reduction

    def forward(self, logits: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        return sigmoid_focal_loss(logits, target, self.alpha, self.gamma, self.reduction, mask)


class _SoftOverlapLoss(nn.Module):
    """Shared part of soft Dice / IoU: probabilities, one-hot targets, masked sums.

    Binary when logits are (B, H, W) or (B, 1, H, W) (sigmoid; target the same shape or
    (B, H, W), values in [0, 1]); multi-class when logits are (B, C, H, W) with C >= 2
    (softmax over C; target (B, H, W) class indices). The score is computed per sample
    and class (pooled over the batch when `batch_dice`), then averaged; loss = 1 - score.
    """

    def __init__(self, smooth: float = 1.0, batch_dice: bool = False) -> None:
        super().__init__()
        if smooth < 0:
            raise ValueError(f"smooth must be >= 0, got {smooth}")
        self.smooth = smooth
        self.batch_dice = batch_dice

    def _score(self, inter: Tensor, p_sum: Tensor, t_sum: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, logits: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        if logits.ndim == 3 or (logits.ndim == 4 and logits.shape[1] == 1):
            p = torch.sigmoid(as_maps(logits, "logits")).unsqueeze(1)  # (B, 1, H, W)
            t = as_maps(target, "target").to(p.dtype).unsqueeze(1)
        elif logits.ndim == 4:
            p = torch.softmax(logits, dim=1)  # (B, C, H, W)
            t = F.one_hot(target.long(), logits.shape[1]).movedim(-1, 1).to(p.dtype)
        else:
            raise ValueError(f"logits must be (B, H, W) or (B, C, H, W), got {tuple(logits.shape)}")
        w = mask_weights(mask, p, channels=True)
        dims = (0, 2, 3) if self.batch_dice else (2, 3)
        inter = (w * p * t).sum(dims)  # (B, C) or (C,)
        p_sum = (w * p).sum(dims)
        t_sum = (w * t).sum(dims)
        return 1 - self._score(inter, p_sum, t_sum).mean()


@register_loss("soft_dice")
class SoftDiceLoss(_SoftOverlapLoss):
    """Soft Dice loss 1 - (2 I + s) / (P + T + s) (Milletari et al. 2016).

    I = sum(p t), P = sum(p), T = sum(t) over the masked pixels; s = `smooth`. Binary or
    multi-class, see `_SoftOverlapLoss`. Returns a dimensionless scalar in [0, 1].
    """

    def _score(self, inter: Tensor, p_sum: Tensor, t_sum: Tensor) -> Tensor:
        return (2 * inter + self.smooth) / (p_sum + t_sum + self.smooth).clamp_min(TINY)


@register_loss("soft_iou")
class SoftIoULoss(_SoftOverlapLoss):
    """Soft IoU (Jaccard) loss 1 - (I + s) / (P + T - I + s) (Rahman & Wang 2016).

    Same inputs and sums as `SoftDiceLoss`. Returns a dimensionless scalar in [0, 1].
    """

    def _score(self, inter: Tensor, p_sum: Tensor, t_sum: Tensor) -> Tensor:
        return (inter + self.smooth) / (p_sum + t_sum - inter + self.smooth).clamp_min(TINY)
