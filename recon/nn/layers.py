"""Layer factories chosen by string (timm's `create_act` / `create_norm`) and `ConvNormAct`."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "ACTIVATIONS",
    "NORMS",
    "ConvNormAct",
    "LayerNorm2d",
    "create_act",
    "create_norm",
    "gcd_groups",
    "make_shortcut",
]

_ACT: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=False),
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.1),  # slope 0.1 as in Darknet / YOLO
    "mish": nn.Mish,
    "identity": nn.Identity,
    "none": nn.Identity,
}
ACTIVATIONS: tuple[str, ...] = tuple(_ACT)
NORMS: tuple[str, ...] = ("batch", "group", "instance", "layer", "none")


def create_act(name: str | None) -> nn.Module:
    """Activation module by name: relu, gelu, silu (swish), leaky_relu, mish, identity/none."""
    key = "none" if name is None else name.lower()
    if key not in _ACT:
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(ACTIVATIONS)}")
    return _ACT[key]()


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel axis of a (B, C, H, W) map, for each pixel (timm's)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__(channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)  # (B, C, H, W) -> (B, H, W, C)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)


def _num_groups(channels: int, wanted: int) -> int:
    """Largest divisor of `channels` that is at most `wanted` (GroupNorm needs a divisor)."""
    return max(g for g in range(1, min(wanted, channels) + 1) if channels % g == 0)


def create_norm(name: str | None, channels: int, num_groups: int = 32) -> nn.Module:
    """Normalisation for (B, C, H, W) maps by name.

    Args:
        name: batch, group, instance (affine), layer (`LayerNorm2d`, over C), none.
        channels: C.
        num_groups: GroupNorm groups wanted; the largest divisor of C not above it is used
            (``num_groups=1`` normalises over C, H, W as PoolFormer does).
    """
    key = "none" if name is None else name.lower()
    if key == "batch":
        return nn.BatchNorm2d(channels)
    if key == "group":
        return nn.GroupNorm(_num_groups(channels, num_groups), channels)
    if key == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if key == "layer":
        return LayerNorm2d(channels)
    if key == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {name!r}; known: {', '.join(NORMS)}")


class ConvNormAct(nn.Sequential):
    """Conv2d -> norm -> activation, with 'same' padding for odd kernels.

    Maps (B, in_ch, H, W) -> (B, out_ch, H/stride, W/stride). The conv has a bias only when
    there is no norm (a bias before a norm that removes the mean is dead weight).

    Args:
        kernel_size: int or (kh, kw) (asymmetric kernels such as (3, 1) are allowed).
        dilation: spacing of kernel taps; padding grows with it.
        groups: conv groups (``groups=in_ch`` is depthwise).
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int | tuple[int, int] = 3,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        norm: str | None = "batch",
        act: str | None = "relu",
    ) -> None:
        k = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        padding = tuple(dilation * (ki - 1) // 2 for ki in k)
        use_bias = norm is None or norm.lower() == "none"
        super().__init__(
            nn.Conv2d(
                in_ch,
                out_ch,
                k,
                stride=stride,
                padding=padding,
                dilation=dilation,
                groups=groups,
                bias=use_bias,
            ),
            create_norm(norm, out_ch),
            create_act(act),
        )
        self.in_ch, self.out_ch, self.stride = in_ch, out_ch, stride


def make_shortcut(
    in_ch: int, out_ch: int, stride: int = 1, norm: str | None = "batch"
) -> nn.Module:
    """Residual shortcut: identity when shapes agree, else 1x1 conv (+ norm) with stride."""
    if in_ch == out_ch and stride == 1:
        return nn.Identity()
    return ConvNormAct(in_ch, out_ch, 1, stride=stride, norm=norm, act=None)


def gcd_groups(wanted: int, *channels: int) -> int:
    """Largest divisor of `wanted` that divides every channel count (groups for a conv)."""
    g = wanted
    for c in channels:
        g = math.gcd(g, c)
    return max(g, 1)
