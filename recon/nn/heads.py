"""Heads on any hierarchical encoder: image classification and semantic segmentation.

The encoder is any module whose forward returns a list of feature maps, finest first,
and which has a `feature_info` (`recon.nn.features.FeatureInfo`): `UNetEncoder` of any
registered block, or `TimmEncoder`. Registered models::

    create_model("encoder", in_ch=1, widths=[16, 32, 64], block="elan")  # feature maps
    create_model("classifier", in_ch=1, out_ch=10, block="dwsep")         # logits (B, 10)
    create_model("segmenter", in_ch=3, out_ch=5, block="residual")        # (B, 5, H, W)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from recon.nn.class_addition import add_class
from recon.nn.layers import ConvNormAct
from recon.nn.registry import register_model
from recon.nn.unet import UNetEncoder

__all__ = [
    "Classifier",
    "ClassifierHead",
    "SegmentationHead",
    "Segmenter",
    "classifier",
    "encoder",
    "segmenter",
]


class ClassifierHead(nn.Module):
    """Global average pooling, dropout, one linear layer: (B, C, h, w) -> (B, classes).

    The linear layer `fc` reads the pooled (B, C) vector, the "pre-logits" features that
    one-shot class addition (`add_class`) imprints from.
    """

    def __init__(self, channels: int, num_classes: int, drop: float = 0.0) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(drop)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.pool(x).flatten(1)  # (B, C, h, w) -> (B, C)
        return x if pre_logits else self.fc(self.drop(x))


class Classifier(nn.Module):
    """An encoder and a `ClassifierHead` on its coarsest feature map.

    Shapes: (B, in_ch, H, W) -> logits (B, num_classes). The timm-style split:
    `forward_features` (the coarsest map, (B, C, H/r, W/r)), `forward_head` (logits, or
    the pooled (B, C) with ``pre_logits=True``).
    """

    def __init__(self, encoder: nn.Module, num_classes: int, drop: float = 0.0) -> None:
        super().__init__()
        self.encoder = encoder
        self.num_features = encoder.feature_info.channels()[-1]
        self.head = ClassifierHead(self.num_features, num_classes, drop)

    @property
    def num_classes(self) -> int:
        return self.head.fc.out_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)[-1]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @torch.no_grad()
    def add_class(self, examples: torch.Tensor) -> int:
        """Add one class from its examples (B, in_ch, H, W) without training (DONE,
        `recon.nn.class_addition.add_class`); returns the new class's index."""
        was_training = self.training
        self.eval()
        features = self.forward_head(self.forward_features(examples), pre_logits=True)
        self.head.fc = add_class(self.head.fc, features)
        self.train(was_training)
        return self.num_classes - 1


class SegmentationHead(nn.Module):
    """Multi-scale head (the all-MLP decoder of SegFormer, Xie et al., NeurIPS 2021):
    every feature map is projected to `embed` channels by a 1x1 conv-norm-act and resized
    (bilinear) to the finest map; the concatenation is fused by a 1x1 conv-norm-act and
    classified per pixel, then resized to the input.

    Shapes: features [(B, c_i, H / r_i, W / r_i)] -> logits (B, num_classes, H, W).
    """

    def __init__(
        self,
        channels: Sequence[int],
        reductions: Sequence[int],
        num_classes: int,
        embed: int = 32,
        norm: str | None = "batch",
        act: str | None = "relu",
        drop: float = 0.0,
    ) -> None:
        super().__init__()
        self.reduction = reductions[0]
        self.project = nn.ModuleList(ConvNormAct(c, embed, 1, norm=norm, act=act) for c in channels)
        self.fuse = ConvNormAct(len(channels) * embed, embed, 1, norm=norm, act=act)
        self.drop = nn.Dropout2d(drop)
        self.classify = nn.Conv2d(embed, num_classes, 1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        size = features[0].shape[-2:]
        maps = [
            F.interpolate(p(f), size=size, mode="bilinear", align_corners=False)
            if f.shape[-2:] != size
            else p(f)
            for p, f in zip(self.project, features, strict=True)
        ]  # each (B, embed, H / r_0, W / r_0)
        y = self.classify(self.drop(self.fuse(torch.cat(maps, dim=1))))
        if self.reduction > 1:  # (B, classes, H / r_0, W / r_0) -> (B, classes, H, W)
            y = F.interpolate(y, scale_factor=self.reduction, mode="bilinear", align_corners=False)
        return y


class Segmenter(nn.Module):
    """An encoder and a `SegmentationHead`: (B, in_ch, H, W) -> logits (B, classes, H, W)."""

    def __init__(self, encoder: nn.Module, num_classes: int, embed: int = 32, **head_kw: Any):
        super().__init__()
        self.encoder = encoder
        info = encoder.feature_info
        self.head = SegmentationHead(
            info.channels(), info.reduction(), num_classes, embed, **head_kw
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


@register_model("encoder")
def encoder(in_ch: int = 4, out_ch: int | None = None, **kwargs: Any) -> UNetEncoder:
    """The hierarchical encoder of a registered block (`UNetEncoder`: widths, block,
    blocks_per_stage, norm, act, down, block_kw): a list of feature maps, described by its
    `feature_info`. `out_ch` must be None: the stage widths are the outputs."""
    if out_ch is not None:
        raise ValueError("an encoder returns its stages' features: set widths, not out_ch")
    return UNetEncoder(in_ch, **kwargs)


@register_model("classifier")
def classifier(in_ch: int = 4, out_ch: int = 10, drop: float = 0.0, **kwargs: Any) -> Classifier:
    """`Classifier` on the encoder of a registered block; out_ch: the number of classes;
    the other keywords are `UNetEncoder`'s."""
    return Classifier(UNetEncoder(in_ch, **kwargs), out_ch, drop)


@register_model("segmenter")
def segmenter(
    in_ch: int = 4, out_ch: int = 1, embed: int = 32, drop: float = 0.0, **kwargs: Any
) -> Segmenter:
    """`Segmenter` on the encoder of a registered block; out_ch: the number of classes;
    the other keywords are `UNetEncoder`'s (its norm and act serve the head too)."""
    norm_act = {k: kwargs[k] for k in ("norm", "act") if k in kwargs}
    return Segmenter(UNetEncoder(in_ch, **kwargs), out_ch, embed, drop=drop, **norm_act)
