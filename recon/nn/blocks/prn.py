"""PRN partial residual block (Wang et al., ICCVW 2019, "Enriching Variety of Layer-wise
Learning Information by Gradient Combination")."""

from __future__ import annotations

import torch
import torch.nn as nn

from recon.nn.layers import ConvNormAct
from recon.nn.registry import register_block

__all__ = ["PartialResidualBlock"]


@register_block("prn")
class PartialResidualBlock(nn.Module):
    """``y = body(x)``; then the first n channels of the input are added to the first n
    channels of y, n = round(partial_ratio * min(in_ch, out_ch)); the rest of y is left
    as it is.

    Adding the identity to part of the channels joins blocks of different widths with no
    projection, and gives the channels different mixes of gradient sources. There is no
    activation after the sum, so the identity reaches exactly the chosen channels. With
    stride > 1 the identity is average-pooled to the output size.

    Shapes: (B, in_ch, H, W) -> body (B, out_ch, H/s, W/s); identity (B, n, H/s, W/s) is
    added to ``y[:, :n]``.

    Args:
        partial_ratio: fraction of min(in_ch, out_ch) that receives the identity (0..1).
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int = 1,
        norm: str | None = "batch",
        act: str | None = "relu",
        partial_ratio: float = 0.5,
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        if not 0.0 <= partial_ratio <= 1.0:
            raise ValueError(f"partial_ratio must be in [0, 1], got {partial_ratio}")
        self.n_identity = round(partial_ratio * min(in_ch, out_ch))
        self.body = nn.Sequential(
            ConvNormAct(in_ch, out_ch, kernel_size, stride=stride, norm=norm, act=act),
            ConvNormAct(out_ch, out_ch, kernel_size, norm=norm, act=None),
        )
        self.pool: nn.Module = (
            nn.AvgPool2d(stride, stride, ceil_mode=True) if stride > 1 else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        n = self.n_identity
        if n == 0:
            return y
        identity = self.pool(x[:, :n])  # (B, n, H, W) -> (B, n, H/s, W/s)
        return torch.cat([y[:, :n] + identity, y[:, n:]], dim=1)
