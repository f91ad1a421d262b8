"""Knowledge-distillation losses: response, dense response, structured and feature KD.

Every loss takes (student, teacher) in that order and, by default, detaches the teacher
(`detach_teacher=False` lets gradients reach it, e.g. for mutual learning).

- `KDLoss`: Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network", 2015.
- `PixelwiseKLLoss`: the same per pixel for dense logits (Liu et al. 2019, pixel-wise KD).
- `PairwiseSimilarityLoss`: Liu et al., "Structured Knowledge Distillation for Semantic
  Segmentation", CVPR 2019 (pair-wise distillation).
- `NormalizedFeatureLoss`: MSE between channel-standardised feature maps (the
  normalise-then-L2 idea of Liu et al., "Normalized Feature Distillation for Semantic
  Segmentation", arXiv:2207.05256, 2022; the exact normalisation here is documented below).
- `OverhaulFeatureLoss`, `overhaul_margin`, `margin_relu`, `partial_l2_loss`: Heo et al.,
  "A Comprehensive Overhaul of Feature Distillation", ICCV 2019.
- `ResponseMSE`: MSE to a teacher's map-valued output (our networks output OPD in nm).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recon.losses._mask import as_maps, mask_weights, weighted_mean
from recon.losses._registry import register_loss
from recon.losses.regression import remove_piston

__all__ = [
    "KDLoss",
    "NormalizedFeatureLoss",
    "OverhaulFeatureLoss",
    "PairwiseSimilarityLoss",
    "PixelwiseKLLoss",
    "ResponseMSE",
    "margin_relu",
    "overhaul_margin",
    "partial_l2_loss",
]


def _teacher(t: Tensor, detach: bool) -> Tensor:
    return t.detach() if detach else t


def _check_temperature(temperature: float) -> None:
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


@register_loss("kd_kl")
class KDLoss(nn.Module):
    """Response distillation: T^2 KL(softmax(z_t / T) || softmax(z_s / T)) (Hinton 2015).

    The T^2 factor keeps the gradient scale independent of T. Shapes: student and teacher
    logits (B, C); the KL (nats) is summed over C and averaged over B. Returns a scalar.
    """

    def __init__(self, temperature: float = 4.0, detach_teacher: bool = True) -> None:
        super().__init__()
        _check_temperature(temperature)
        self.temperature = temperature
        self.detach_teacher = detach_teacher

    def forward(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        temp = self.temperature
        log_p_s = F.log_softmax(student_logits / temp, dim=1)
        log_p_t = F.log_softmax(_teacher(teacher_logits, self.detach_teacher) / temp, dim=1)
        kl = F.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean")
        return kl * temp**2


@register_loss("pixelwise_kl")
class PixelwiseKLLoss(nn.Module):
    """Pixel-wise distillation of dense logits: per-pixel softmax over channels.

    T^2 KL(softmax(z_t / T) || softmax(z_s / T)) summed over C, averaged over the masked
    pixels of the batch. Shapes: logits (B, C, H, W); mask (H, W), (B, H, W) or
    (B, 1, H, W). Returns a scalar in nats.
    """

    def __init__(self, temperature: float = 1.0, detach_teacher: bool = True) -> None:
        super().__init__()
        _check_temperature(temperature)
        self.temperature = temperature
        self.detach_teacher = detach_teacher

    def forward(
        self, student_logits: Tensor, teacher_logits: Tensor, mask: Tensor | None = None
    ) -> Tensor:
        temp = self.temperature
        log_p_s = F.log_softmax(student_logits / temp, dim=1)
        log_p_t = F.log_softmax(_teacher(teacher_logits, self.detach_teacher) / temp, dim=1)
        kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(1)  # (B, C, H, W) -> (B, H, W)
        return weighted_mean(kl, mask_weights(mask, kl)) * temp**2


def _similarity(feat: Tensor) -> Tensor:
    """Cosine similarity of all spatial positions: (B, C, H, W) -> (B, HW, HW)."""
    f = F.normalize(feat.flatten(2), dim=1, eps=1e-8)  # (B, C, HW), unit norm over C
    return f.transpose(1, 2) @ f


@register_loss("pairwise_similarity")
class PairwiseSimilarityLoss(nn.Module):
    """Pair-wise similarity distillation (Liu et al. 2019, structured KD).

    a_ij = f_i . f_j / (|f_i| |f_j|) over spatial positions i, j (each node a position
    after max-pooling by `pool`, as the paper's coarse nodes); loss = mean over the batch
    and the (HW)^2 pairs of (a_s - a_t)^2. Student and teacher may have different channel
    counts but must give the same pooled H, W. Shapes: (B, C_s, H, W), (B, C_t, H, W).
    Memory is O(B (HW)^2): pool large maps. Returns a dimensionless scalar.
    """

    def __init__(self, pool: int = 1, detach_teacher: bool = True) -> None:
        super().__init__()
        if pool < 1:
            raise ValueError(f"pool must be >= 1, got {pool}")
        self.pool = pool
        self.detach_teacher = detach_teacher

    def _nodes(self, feat: Tensor) -> Tensor:
        if self.pool == 1:
            return feat
        return F.max_pool2d(feat, self.pool, self.pool, ceil_mode=True)

    def forward(self, student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
        s = self._nodes(student_feat)
        t = self._nodes(_teacher(teacher_feat, self.detach_teacher))
        if s.shape[2:] != t.shape[2:]:
            raise ValueError(f"spatial sizes differ: student {s.shape[2:]}, teacher {t.shape[2:]}")
        return F.mse_loss(_similarity(s), _similarity(t))


def _standardise(feat: Tensor, eps: float) -> Tensor:
    """Zero mean, unit variance per sample and channel over the spatial positions."""
    mean = feat.mean((2, 3), keepdim=True)
    var = feat.var((2, 3), unbiased=False, keepdim=True)
    return (feat - mean) / torch.sqrt(var + eps)


@register_loss("normalized_feature")
class NormalizedFeatureLoss(nn.Module):
    """Normalised feature distillation: MSE between channel-standardised feature maps.

    Each channel of each sample is standardised over H, W (zero mean, unit variance)
    for student and teacher, removing their differences of scale and offset, then the
    MSE is taken. When the channel counts differ, a 1x1 convolution (part of this module,
    trained with the student) maps the student to the teacher's channels.
    Shapes: (B, C_s, H, W), (B, C_t, H, W). Returns a dimensionless scalar.
    """

    def __init__(
        self,
        student_channels: int | None = None,
        teacher_channels: int | None = None,
        eps: float = 1e-5,
        detach_teacher: bool = True,
    ) -> None:
        super().__init__()
        self.connector: nn.Module = nn.Identity()
        if student_channels is not None and teacher_channels is not None:
            if student_channels != teacher_channels:
                self.connector = nn.Conv2d(student_channels, teacher_channels, 1, bias=False)
        self.eps = eps
        self.detach_teacher = detach_teacher

    def forward(self, student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
        s = _standardise(self.connector(student_feat), self.eps)
        t = _standardise(_teacher(teacher_feat, self.detach_teacher), self.eps)
        return F.mse_loss(s, t)


def overhaul_margin(bn: nn.BatchNorm2d, min_prob: float = 1e-3) -> Tensor:
    """Per-channel margin of Heo et al. 2019: E[x | x < 0] for x ~ N(beta, gamma^2).

    The BN output before the ReLU is modelled per channel as a Gaussian with mean = the
    BN bias (beta) and std = |BN weight| (|gamma|); the margin is the expectation of its
    negative responses, m = beta - |gamma| phi(beta/|gamma|) / Phi(-beta/|gamma|). Where
    the negative part has probability Phi(-beta/|gamma|) <= `min_prob`, m = -3 |gamma|, as
    in the authors' code. A BN without affine parameters is N(0, 1).

    Note: this is the *conditional* mean E[x | x < 0] (what the paper and its code use),
    not E[min(x, 0)] = P(x < 0) E[x | x < 0].

    Returns: (C,) float tensor, in the units of the BN output, on the BN's device.
    """
    if bn.affine:
        std = bn.weight.detach().abs().float().clamp_min(1e-12)
        mean = bn.bias.detach().float()
    else:
        device = bn.running_mean.device if bn.running_mean is not None else None
        std = torch.ones(bn.num_features, device=device)
        mean = torch.zeros_like(std)
    z = mean / std
    prob_neg = torch.special.ndtr(-z)
    pdf = torch.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)
    margin = mean - std * pdf / prob_neg.clamp_min(1e-30)
    return torch.where(prob_neg > min_prob, margin, -3 * std)


def margin_relu(x: Tensor, margin: Tensor) -> Tensor:
    """Teacher transform of Heo et al.: max(x, m), m per channel (C,). x: (B, C, H, W)."""
    return torch.maximum(x, margin.view(1, -1, 1, 1).to(x))


def partial_l2_loss(student: Tensor, target: Tensor) -> Tensor:
    """Partial L2 of Heo et al. (element-wise, same shape as the inputs).

    (target - student)^2, except 0 where student <= target <= 0 (the teacher's response
    is negative, i.e. switched off by the ReLU, and the student is already below it).
    """
    skip = (student <= target) & (target <= 0)
    return (target - student).square() * (~skip)


@register_loss("overhaul")
class OverhaulFeatureLoss(nn.Module):
    """Overhaul feature distillation (Heo et al., "A Comprehensive Overhaul...", ICCV 2019).

    The student's pre-ReLU feature goes through a connector (1x1 conv + BN, trained with
    the student) to the teacher's channels; the teacher's pre-ReLU feature goes through
    the margin ReLU (`margin_relu`, margin from `overhaul_margin(teacher_bn)` or given);
    loss = `partial_l2_loss` summed over C, H, W and averaged over the batch (the paper
    sums; scale it with the loss weight, the authors divide by 1e3-1e4).

    Args:
        student_channels, teacher_channels: C_s, C_t.
        teacher_bn: the BN layer that produces the distilled teacher feature; or
        margin: the (C_t,) margins directly.

    Shapes: student (B, C_s, H, W), teacher (B, C_t, H, W), same H, W. Returns a scalar.
    """

    def __init__(
        self,
        student_channels: int,
        teacher_channels: int,
        teacher_bn: nn.BatchNorm2d | None = None,
        margin: Tensor | None = None,
        reduction: Literal["batchmean", "sum", "mean"] = "batchmean",
        detach_teacher: bool = True,
    ) -> None:
        super().__init__()
        if (teacher_bn is None) == (margin is None):
            raise ValueError("give exactly one of teacher_bn and margin")
        margin = overhaul_margin(teacher_bn) if teacher_bn is not None else margin
        if margin.shape != (teacher_channels,):
            raise ValueError(f"margin must have shape ({teacher_channels},), got {margin.shape}")
        if reduction not in ("batchmean", "sum", "mean"):
            raise ValueError(f"reduction must be 'batchmean', 'sum' or 'mean', got {reduction!r}")
        conv = nn.Conv2d(student_channels, teacher_channels, 1, bias=False)
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        self.connector = nn.Sequential(conv, nn.BatchNorm2d(teacher_channels))
        self.register_buffer("margin", margin.detach().float().clone())
        self.reduction = reduction
        self.detach_teacher = detach_teacher

    def forward(self, student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
        s = self.connector(student_feat)  # (B, C_s, H, W) -> (B, C_t, H, W)
        t = margin_relu(_teacher(teacher_feat, self.detach_teacher), self.margin)
        loss = partial_l2_loss(s, t)
        if self.reduction == "mean":
            return loss.mean()
        return loss.sum() / (s.shape[0] if self.reduction == "batchmean" else 1)


@register_loss("response_mse")
class ResponseMSE(nn.Module):
    """Response distillation for map-valued outputs: masked MSE to the teacher's map.

    For networks that output OPD maps (nm), not logits. With `remove_piston` (default)
    the unobservable piston of both maps is removed first. Shapes: (B, 1, H, W) or
    (B, H, W) in nm; mask (H, W), (B, H, W) or (B, 1, H, W). Returns nm^2 (scalar).
    """

    def __init__(self, remove_piston: bool = True, detach_teacher: bool = True) -> None:
        super().__init__()
        self.remove_piston = remove_piston
        self.detach_teacher = detach_teacher

    def forward(
        self, student_map: Tensor, teacher_map: Tensor, mask: Tensor | None = None
    ) -> Tensor:
        s = as_maps(student_map, "student_map")
        t = as_maps(_teacher(teacher_map, self.detach_teacher), "teacher_map")
        if self.remove_piston:
            s, t = remove_piston(s, mask), remove_piston(t, mask)
        return weighted_mean((s - t).square(), mask_weights(mask, s))
