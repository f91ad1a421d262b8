"""U-Net from any registered block (Ronneberger et al., MICCAI 2015), with an optional
bottleneck block and deep supervision (Lee et al., AISTATS 2015; YOLOv7's coarse-for-aux,
fine-for-lead assignment, Wang et al., CVPR 2023).

The encoder and decoder are separate modules so that other networks (e.g. the
wavelength-recurrent GRU network) can reuse them: `UNetEncoder` returns the list of skip
features, finest first; `UNetDecoder` takes that list.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from recon.nn.features import FeatureInfo
from recon.nn.layers import ConvNormAct
from recon.nn.registry import create_block, register_model

__all__ = [
    "UNet",
    "UNetDecoder",
    "UNetEncoder",
    "check_divisible",
    "deep_supervision_loss",
    "unet",
]

DOWN_MODES = ("conv", "maxpool")
UP_MODES = ("transpose", "bilinear")


def check_divisible(x: torch.Tensor, multiple: int, what: str = "U-Net") -> None:
    """Raise `ValueError` unless the height and width of (B, C, H, W) `x` divide `multiple`."""
    if x.ndim != 4:
        raise ValueError(f"{what} expects a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    if h % multiple or w % multiple:
        raise ValueError(
            f"{what} input height and width must be divisible by {multiple} "
            f"(one factor 2 per downsampling), got H={h}, W={w}"
        )


def _stage(
    block: str,
    in_ch: int,
    out_ch: int,
    n: int,
    norm: str | None,
    act: str | None,
    block_kw: dict[str, Any],
) -> nn.Sequential:
    """`n` blocks; the first maps in_ch -> out_ch, the others keep out_ch."""
    if n < 1:
        raise ValueError(f"blocks_per_stage must be >= 1, got {n}")
    return nn.Sequential(
        *(
            create_block(block, in_ch if i == 0 else out_ch, out_ch, norm=norm, act=act, **block_kw)
            for i in range(n)
        )
    )


class UNetEncoder(nn.Module):
    """Stem conv, then one stage per width; stages after the first halve H and W first.

    Shapes: (B, in_ch, H, W) -> [(B, widths[i], H / 2^i, W / 2^i) for each i]; the
    channels and strides are also in `feature_info` (as timm's): the encoder of any block
    is a feature extractor for a decoder or a head (`recon.nn.heads`).

    Args:
        in_ch: input channels (e.g. the number of wavelengths).
        widths: channels of each stage, finest first.
        block: registered block name for the stages.
        blocks_per_stage: blocks in each stage.
        down: "conv" (3x3 stride-2 conv-norm-act) or "maxpool" (2x2 max pooling).
        block_kw: extra keyword arguments for every block.
    """

    def __init__(
        self,
        in_ch: int,
        widths: Sequence[int] = (32, 64, 128, 256),
        block: str = "residual",
        blocks_per_stage: int = 1,
        norm: str | None = "batch",
        act: str | None = "relu",
        down: str = "conv",
        block_kw: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not widths:
            raise ValueError("widths must name at least one stage")
        if down not in DOWN_MODES:
            raise ValueError(f"down must be one of {DOWN_MODES}, got {down!r}")
        kw = dict(block_kw or {})
        self.out_channels: list[int] = list(widths)
        self.reductions: list[int] = [2**i for i in range(len(widths))]
        self.feature_info = FeatureInfo(self.out_channels, self.reductions)
        self.stem = ConvNormAct(in_ch, widths[0], 3, norm=norm, act=act)
        self.stages = nn.ModuleList()
        prev = widths[0]
        for i, width in enumerate(widths):
            layers: list[nn.Module] = []
            if i > 0:
                if down == "conv":
                    layers.append(ConvNormAct(prev, prev, 3, stride=2, norm=norm, act=act))
                else:
                    layers.append(nn.MaxPool2d(2))
            layers.append(_stage(block, prev, width, blocks_per_stage, norm, act, kw))
            self.stages.append(nn.Sequential(*layers))
            prev = width

    @property
    def size_multiple(self) -> int:
        """H and W must be multiples of this."""
        return self.reductions[-1]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        check_divisible(x, self.size_multiple, "UNetEncoder")
        x = self.stem(x)  # (B, in_ch, H, W) -> (B, widths[0], H, W)
        features = []
        for stage in self.stages:
            x = stage(x)  # (B, w_{i-1}, H/2^(i-1), ...) -> (B, w_i, H/2^i, ...)
            features.append(x)
        return features


class UNetDecoder(nn.Module):
    """From the deepest feature up: upsample x2, concatenate the skip, run a stage.

    Shapes: features [(B, c_i, H / 2^i, W / 2^i)], finest first -> (B, c_0, H, W).

    Args:
        encoder_channels: channels of the encoder features, finest first.
        up: "transpose" (2x2 stride-2 transposed conv) or "bilinear" (bilinear x2, then a
            3x3 conv-norm-act).
    """

    def __init__(
        self,
        encoder_channels: Sequence[int],
        block: str = "residual",
        blocks_per_stage: int = 1,
        norm: str | None = "batch",
        act: str | None = "relu",
        up: str = "transpose",
        block_kw: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if up not in UP_MODES:
            raise ValueError(f"up must be one of {UP_MODES}, got {up!r}")
        chans = list(encoder_channels)
        if not chans:
            raise ValueError("encoder_channels must not be empty")
        kw = dict(block_kw or {})
        self.encoder_channels = chans
        # channels of forward_stages' outputs, coarsest first
        self.stage_channels: list[int] = chans[::-1]
        self.out_channels = chans[0]
        self.ups = nn.ModuleList()
        self.stages = nn.ModuleList()
        for i in range(len(chans) - 1, 0, -1):
            c_in, c_skip = chans[i], chans[i - 1]
            if up == "transpose":
                self.ups.append(nn.ConvTranspose2d(c_in, c_skip, 2, stride=2))
            else:
                self.ups.append(
                    nn.Sequential(
                        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                        ConvNormAct(c_in, c_skip, 3, norm=norm, act=act),
                    )
                )
            self.stages.append(_stage(block, 2 * c_skip, c_skip, blocks_per_stage, norm, act, kw))

    def forward_stages(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The deepest feature and every decoder stage output, coarsest first."""
        if len(features) != len(self.encoder_channels):
            raise ValueError(
                f"decoder expects {len(self.encoder_channels)} features, got {len(features)}"
            )
        x = features[-1]
        outputs = [x]
        for up, stage, skip in zip(self.ups, self.stages, reversed(features[:-1]), strict=True):
            x = up(x)  # (B, c_i, h, w) -> (B, c_{i-1}, 2h, 2w)
            x = stage(torch.cat([x, skip], dim=1))  # (B, 2 c_{i-1}, ...) -> (B, c_{i-1}, ...)
            outputs.append(x)
        return outputs

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.forward_stages(features)[-1]


class UNet(nn.Module):
    """Encoder, optional bottleneck block, decoder with skips, 1x1 head.

    Shapes: (B, in_ch, H, W) -> (B, out_ch, H, W); H and W must be multiples of
    2^(len(widths) - 1) (`ValueError` otherwise).

    With `deep_supervision`, 1x1 auxiliary heads read the deepest feature and every
    decoder stage but the last; in training mode `forward` returns
    ``(out, [aux_coarsest, ..., aux_finest])`` with aux i of shape
    (B, out_ch, H / 2^(L-1-i), W / 2^(L-1-i)); in eval mode it returns `out` only.

    Args:
        in_ch, out_ch: input and output channels.
        widths: encoder stage channels, finest first.
        block: registered block name used in every stage.
        blocks_per_stage: blocks per encoder and decoder stage.
        bottleneck: registered block name applied once to the deepest feature (e.g.
            "edgevit" for global attention there), or None.
        deep_supervision: add auxiliary heads (see above).
        down, up: downsampling and upsampling modes (see `UNetEncoder`, `UNetDecoder`).
        block_kw, bottleneck_kw: extra keyword arguments for the blocks / the bottleneck.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        widths: Sequence[int] = (32, 64, 128, 256),
        block: str = "residual",
        blocks_per_stage: int = 1,
        norm: str | None = "batch",
        act: str | None = "relu",
        bottleneck: str | None = None,
        deep_supervision: bool = False,
        down: str = "conv",
        up: str = "transpose",
        block_kw: dict[str, Any] | None = None,
        bottleneck_kw: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        widths = list(widths)
        self.in_ch, self.out_ch, self.widths = in_ch, out_ch, widths
        self.deep_supervision = deep_supervision
        self.encoder = UNetEncoder(
            in_ch, widths, block, blocks_per_stage, norm, act, down, block_kw
        )
        self.bottleneck: nn.Module = (
            create_block(
                bottleneck, widths[-1], widths[-1], norm=norm, act=act, **(bottleneck_kw or {})
            )
            if bottleneck
            else nn.Identity()
        )
        self.decoder = UNetDecoder(widths, block, blocks_per_stage, norm, act, up, block_kw)
        self.head = nn.Conv2d(widths[0], out_ch, 1)
        self.aux_heads = (
            nn.ModuleList(nn.Conv2d(c, out_ch, 1) for c in self.decoder.stage_channels[:-1])
            if deep_supervision
            else nn.ModuleList()
        )

    @property
    def size_multiple(self) -> int:
        """H and W must be multiples of this."""
        return self.encoder.size_multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        check_divisible(x, self.size_multiple, "UNet")
        features = self.encoder(x)  # L x (B, w_i, H/2^i, W/2^i)
        features[-1] = self.bottleneck(features[-1])
        stages = self.decoder.forward_stages(features)  # coarsest first; last (B, w_0, H, W)
        out = self.head(stages[-1])  # (B, w_0, H, W) -> (B, out_ch, H, W)
        if self.deep_supervision and self.training:
            aux = [head(s) for head, s in zip(self.aux_heads, stages[:-1], strict=True)]
            return out, aux
        return out


def deep_supervision_loss(
    aux_outputs: Sequence[torch.Tensor],
    target: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    weights: Sequence[float] | None = None,
) -> torch.Tensor:
    """Weighted sum of `loss_fn(aux, target_at_aux_resolution)` over the auxiliary outputs.

    The target (B, C, H, W), or (B, H, W) read as one channel, is area-averaged down to each
    auxiliary output's (h, w): coarse targets for the auxiliary heads, the full-resolution
    target stays with the lead head (YOLOv7's coarse-for-auxiliary, fine-for-lead).

    Args:
        aux_outputs: (B, C, h_i, w_i) maps, e.g. the list a `UNet` returns in training mode.
        target: full-resolution target; H, W multiples of every h_i, w_i.
        loss_fn: ``loss_fn(prediction, target) -> scalar``.
        weights: one weight per auxiliary output; default 1 / len(aux_outputs) each.

    Returns:
        Scalar tensor (zero when there are no auxiliary outputs).
    """
    if target.ndim == 3:
        target = target.unsqueeze(1)  # (B, H, W) -> (B, 1, H, W)
    if not aux_outputs:
        return target.new_zeros(())
    if weights is None:
        weights = [1.0 / len(aux_outputs)] * len(aux_outputs)
    if len(weights) != len(aux_outputs):
        raise ValueError(f"{len(weights)} weights for {len(aux_outputs)} auxiliary outputs")
    total = target.new_zeros(())
    for aux, weight in zip(aux_outputs, weights, strict=True):
        coarse = F.interpolate(target, size=aux.shape[-2:], mode="area")  # (B, C, h, w)
        total = total + weight * loss_fn(aux, coarse)
    return total


@register_model("unet")
def unet(in_ch: int = 4, out_ch: int = 1, **kwargs: Any) -> UNet:
    """U-Net from registered blocks; see `UNet` for the keyword arguments."""
    return UNet(in_ch, out_ch, **kwargs)
