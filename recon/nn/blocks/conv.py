"""Convolutional blocks: residual, double conv, depthwise-separable, shuffle, asymmetric,
bottleneck and dilated.

Every block maps (B, in_ch, H, W) -> (B, out_ch, H/stride, W/stride) and takes
``(in_ch, out_ch, stride=1, norm="batch", act="relu", ...)``.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from recon.nn.layers import ConvNormAct, create_act, gcd_groups, make_shortcut
from recon.nn.registry import register_block

__all__ = [
    "AsymmetricBlock",
    "BottleneckBlock",
    "DepthwiseSeparableBlock",
    "DilatedBlock",
    "DoubleConvBlock",
    "ResidualBlock",
    "ResidualSum",
    "ShuffleBlock",
]


class ResidualSum(nn.Module):
    """``act(body(x) + shortcut(x))``; the shortcut is identity or a 1x1 projection."""

    def __init__(
        self, body: nn.Module, shortcut: nn.Module | None, act: str | None = "relu"
    ) -> None:
        super().__init__()
        self.body = body
        self.shortcut = shortcut
        self.act = create_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        if self.shortcut is not None:
            y = y + self.shortcut(x)
        return self.act(y)


@register_block("residual")
class ResidualBlock(ResidualSum):
    """ResNet basic block: two 3x3 conv-norm(-act) and a skip (He et al., CVPR 2016).

    The default block of PhENN (Sinha et al., Optica 2017). The first conv carries the
    stride; the skip is a 1x1 projection when the shape changes.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int = 1,
        norm: str | None = "batch",
        act: str | None = "relu",
        kernel_size: int = 3,
    ) -> None:
        body = nn.Sequential(
            ConvNormAct(in_ch, out_ch, kernel_size, stride=stride, norm=norm, act=act),
            ConvNormAct(out_ch, out_ch, kernel_size, norm=norm, act=None),
        )
        super().__init__(body, make_shortcut(in_ch, out_ch, stride, norm), act)


@register_block("double_conv")
class DoubleConvBlock(nn.Sequential):
    """Two 3x3 conv-norm-act without a skip: the original U-Net stage (Ronneberger et al.,
    MICCAI 2015)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int = 1,
        norm: str | None = "batch",
        act: str | None = "relu",
        kernel_size: int = 3,
    ) -> None:
        super().__init__(
            ConvNormAct(in_ch, out_ch, kernel_size, stride=stride, norm=norm, act=act),
            ConvNormAct(out_ch, out_ch, kernel_size, norm=norm, act=act),
        )


@register_block("dwsep")
class DepthwiseSeparableBlock(ResidualSum):
    """Depthwise kxk conv then pointwise 1x1 conv (MobileNets, Howard et al. 2017; Xception,
    Chollet, CVPR 2017), with a skip when the shape is kept (as timm's
    `DepthwiseSeparableConv`)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int = 1,
        norm: str | None = "batch",
        act: str | None = "relu",
        kernel_size: int = 3,
        skip: bool = True,
    ) -> None:
        body = nn.Sequential(
            # (B, C_in, H, W) -> (B, C_in, H/s, W/s): one kxk filter per channel
            ConvNormAct(in_ch, in_ch, kernel_size, stride=stride, groups=in_ch, norm=norm, act=act),
            # (B, C_in, H/s, W/s) -> (B, C_out, H/s, W/s): mix channels
            ConvNormAct(in_ch, out_ch, 1, norm=norm, act=None),
        )
        has_skip = skip and in_ch == out_ch and stride == 1
        super().__init__(body, nn.Identity() if has_skip else None, act)


@register_block("shuffle")
class ShuffleBlock(ResidualSum):
    """ShuffleNet unit: grouped 1x1 conv, channel shuffle, depthwise 3x3, grouped 1x1 conv,
    skip (Zhang et al., CVPR 2018).

    Args:
        groups: conv groups wanted; the largest divisor of it that divides in_ch and out_ch
            is used (so any widths work; groups=1 degenerates to a plain bottleneck).
        ratio: bottleneck width as a fraction of out_ch.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int = 1,
        norm: str | None = "batch",
        act: str | None = "relu",
        groups: int = 4,
        ratio: float = 0.25,
    ) -> None:
        g = gcd_groups(groups, in_ch, out_ch)
        mid = max(g, round(out_ch * ratio / g) * g)
        body = nn.Sequential(
            ConvNormAct(in_ch, mid, 1, groups=g, norm=norm, act=act),
            nn.ChannelShuffle(g),  # (B, g*m, H, W): interleave the g groups' channels
            ConvNormAct(mid, mid, 3, stride=stride, groups=mid, norm=norm, act=None),
            ConvNormAct(mid, out_ch, 1, groups=g, norm=norm, act=None),
        )
        super().__init__(body, make_shortcut(in_ch, out_ch, stride, norm), act)
        self.groups = g


@register_block("asymmetric")
class AsymmetricBlock(ResidualSum):
    """Factorised convs: kx1 then 1xk, twice, and a skip (Inception-v3, Szegedy et al.,
    CVPR 2016; ERFNet non-bottleneck-1D, Romera et al., T-ITS 2018).

    A kx1 + 1xk pair sees a kxk window with 2k instead of k^2 weights per channel pair.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int = 1,
        norm: str | None = "batch",
        act: str | None = "relu",
        kernel_size: int = 3,
    ) -> None:
        k = kernel_size
        body = nn.Sequential(
            ConvNormAct(in_ch, out_ch, (k, 1), stride=stride, norm=norm, act=act),
            ConvNormAct(out_ch, out_ch, (1, k), norm=norm, act=act),
            ConvNormAct(out_ch, out_ch, (k, 1), norm=norm, act=act),
            ConvNormAct(out_ch, out_ch, (1, k), norm=norm, act=None),
        )
        super().__init__(body, make_shortcut(in_ch, out_ch, stride, norm), act)


@register_block("bottleneck")
class BottleneckBlock(ResidualSum):
    """ResNet bottleneck: 1x1 reduce, kxk, 1x1 expand, skip (He et al., CVPR 2016).

    Args:
        ratio: bottleneck width as a fraction of out_ch (ResNet: 1/4).
        groups: groups of the kxk conv (ResNeXt, Xie et al., CVPR 2017); the largest
            divisor of it that divides the bottleneck width is used.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int = 1,
        norm: str | None = "batch",
        act: str | None = "relu",
        kernel_size: int = 3,
        ratio: float = 0.25,
        groups: int = 1,
    ) -> None:
        mid = max(1, round(out_ch * ratio))
        g = gcd_groups(groups, mid)
        body = nn.Sequential(
            ConvNormAct(in_ch, mid, 1, norm=norm, act=act),  # (B, C_in) -> (B, mid)
            ConvNormAct(mid, mid, kernel_size, stride=stride, groups=g, norm=norm, act=act),
            ConvNormAct(mid, out_ch, 1, norm=norm, act=None),  # (B, mid) -> (B, C_out)
        )
        super().__init__(body, make_shortcut(in_ch, out_ch, stride, norm), act)


@register_block("dilated")
class DilatedBlock(ResidualSum):
    """Residual block of two dilated 3x3 convs (Yu & Koltun, ICLR 2016; DeepLab, Chen et
    al., TPAMI 2018): a receptive field of 1 + 4*dilation pixels without pooling."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int = 1,
        norm: str | None = "batch",
        act: str | None = "relu",
        dilation: int = 2,
    ) -> None:
        body = nn.Sequential(
            ConvNormAct(in_ch, out_ch, 3, stride=stride, dilation=dilation, norm=norm, act=act),
            ConvNormAct(out_ch, out_ch, 3, dilation=dilation, norm=norm, act=None),
        )
        super().__init__(body, make_shortcut(in_ch, out_ch, stride, norm), act)
