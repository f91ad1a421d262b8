"""Any timm model as a U-Net encoder (timm's ``features_only`` feature extraction).

timm is optional (the ``vision`` extra) and imported only when an encoder is built. The
model ``timm_unet`` is registered only when timm is installed, so that a test over every
registered model does not depend on it.
"""

from __future__ import annotations

import importlib.util
import itertools
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import torch
import torch.nn as nn

from recon.nn.features import FeatureInfo
from recon.nn.layers import ConvNormAct
from recon.nn.registry import register_model
from recon.nn.unet import UNetDecoder, check_divisible

__all__ = ["TimmEncoder", "TimmUNet", "import_timm"]


def import_timm() -> ModuleType:
    """Import timm, or raise an `ImportError` that names the extra that provides it."""
    try:
        import timm
    except ImportError as exc:
        raise ImportError(
            "timm encoders need the optional 'vision' extra: pip install 'zwfs[vision]' "
            "(timm and torchvision must match the installed torch)"
        ) from exc
    return timm


class TimmEncoder(nn.Module):
    """``timm.create_model(name, features_only=True)``: a list of feature maps, finest first.

    Shapes: (B, in_ch, H, W) -> [(B, out_channels[i], H / reductions[i], W / reductions[i])].

    Args:
        name: timm model name, e.g. "resnet18", "convnext_atto", "efficientnet_b0".
        in_ch: input channels (timm adapts the stem: ``in_chans``).
        pretrained: load timm's pretrained weights (needs network access or a cache).
        out_indices: which feature levels to return (timm's default: all).
        **kwargs: passed to `timm.create_model`.
    """

    def __init__(
        self,
        name: str,
        in_ch: int,
        pretrained: bool = False,
        out_indices: Sequence[int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        timm = import_timm()
        if out_indices is not None:
            kwargs["out_indices"] = tuple(out_indices)
        self.model = timm.create_model(
            name, features_only=True, pretrained=pretrained, in_chans=in_ch, **kwargs
        )
        self.out_channels: list[int] = list(self.model.feature_info.channels())
        self.reductions: list[int] = list(self.model.feature_info.reduction())
        self.feature_info = FeatureInfo(
            self.out_channels,
            self.reductions,
            [f"model.{name}" for name in self.model.feature_info.module_name()],
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.model(x))


class TimmUNet(nn.Module):
    """A timm encoder, a `UNetDecoder` from registered blocks, and a head at full resolution.

    The encoder's feature levels must be a factor 2 apart (true of ResNets, ConvNeXts,
    EfficientNets...); when its finest level is at reduction r > 1, the head upsamples by
    r (bilinear) and applies a 3x3 conv-norm-act before the 1x1 output conv.

    Shapes: (B, in_ch, H, W) -> (B, out_ch, H, W), H and W multiples of the coarsest
    reduction.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        encoder: str = "resnet18",
        block: str = "residual",
        blocks_per_stage: int = 1,
        norm: str | None = "batch",
        act: str | None = "relu",
        up: str = "transpose",
        pretrained: bool = False,
        block_kw: dict[str, Any] | None = None,
        encoder_kw: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.encoder = TimmEncoder(encoder, in_ch, pretrained=pretrained, **(encoder_kw or {}))
        red = self.encoder.reductions
        if any(b != 2 * a for a, b in itertools.pairwise(red)):
            raise ValueError(f"timm encoder {encoder!r} levels are not a factor 2 apart: {red}")
        c0 = self.encoder.out_channels[0]
        self.decoder = UNetDecoder(
            self.encoder.out_channels, block, blocks_per_stage, norm, act, up, block_kw
        )
        layers: list[nn.Module] = []
        if red[0] > 1:
            layers += [
                nn.Upsample(scale_factor=red[0], mode="bilinear", align_corners=False),
                ConvNormAct(c0, c0, 3, norm=norm, act=act),
            ]
        layers.append(nn.Conv2d(c0, out_ch, 1))
        self.head = nn.Sequential(*layers)
        self.size_multiple = red[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_divisible(x, self.size_multiple, "TimmUNet")
        features = self.encoder(x)  # [(B, c_i, H / r_i, W / r_i)]
        y = self.decoder(features)  # -> (B, c_0, H / r_0, W / r_0)
        return self.head(y)  # -> (B, out_ch, H, W)


def _timm_installed() -> bool:
    return importlib.util.find_spec("timm") is not None


if _timm_installed():

    @register_model("timm_unet")
    def timm_unet(in_ch: int = 4, out_ch: int = 1, **kwargs: Any) -> TimmUNet:
        """U-Net whose encoder is a timm model (``encoder="resnet18"``); see `TimmUNet`."""
        return TimmUNet(in_ch, out_ch, **kwargs)
