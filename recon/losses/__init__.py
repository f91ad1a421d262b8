"""Losses for the reconstruction networks and the shared backbone library.

Each loss is a small `nn.Module`, registered by name with `recon.nn.registry`
(`create_loss("opd", w_pix=1e-4)`) when that registry is importable; the decorator
comes from `recon.losses._registry`, the one place that guards the import.

- regression: `NPCCLoss`, `MaskedMSELoss`, `MaskedL1Loss`, `OPDLoss`, `remove_piston`.
- segmentation: `CrossEntropyLoss`, `WeightedBCELoss`, `SigmoidFocalLoss`,
  `SoftDiceLoss`, `SoftIoULoss`.
- distillation: `KDLoss`, `PixelwiseKLLoss`, `PairwiseSimilarityLoss`,
  `NormalizedFeatureLoss`, `OverhaulFeatureLoss`, `ResponseMSE`.
"""

from __future__ import annotations

from recon.losses._registry import register_loss
from recon.losses.distillation import (
    KDLoss,
    NormalizedFeatureLoss,
    OverhaulFeatureLoss,
    PairwiseSimilarityLoss,
    PixelwiseKLLoss,
    ResponseMSE,
    margin_relu,
    overhaul_margin,
    partial_l2_loss,
)
from recon.losses.regression import (
    MaskedL1Loss,
    MaskedMSELoss,
    NPCCLoss,
    OPDLoss,
    npcc,
    remove_piston,
)
from recon.losses.segmentation import (
    CrossEntropyLoss,
    SigmoidFocalLoss,
    SoftDiceLoss,
    SoftIoULoss,
    WeightedBCELoss,
    pos_weight_from_counts,
    sigmoid_focal_loss,
)

__all__ = [
    "CrossEntropyLoss",
    "KDLoss",
    "MaskedL1Loss",
    "MaskedMSELoss",
    "NPCCLoss",
    "NormalizedFeatureLoss",
    "OPDLoss",
    "OverhaulFeatureLoss",
    "PairwiseSimilarityLoss",
    "PixelwiseKLLoss",
    "ResponseMSE",
    "SigmoidFocalLoss",
    "SoftDiceLoss",
    "SoftIoULoss",
    "WeightedBCELoss",
    "margin_relu",
    "npcc",
    "overhaul_margin",
    "partial_l2_loss",
    "pos_weight_from_counts",
    "register_loss",
    "remove_piston",
    "sigmoid_focal_loss",
]
