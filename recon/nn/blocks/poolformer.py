"""PoolFormer block: a MetaFormer whose token mixer is average pooling (Yu et al., CVPR
2022, "MetaFormer is Actually What You Need for Vision")."""

from __future__ import annotations

import torch
import torch.nn as nn

from recon.nn.blocks.edgevit import ConvFFN
from recon.nn.layers import ConvNormAct, create_norm
from recon.nn.registry import register_block

__all__ = ["PoolFormerBlock", "PoolMixer"]


class PoolMixer(nn.Module):
    """Token mixer ``pool(x) - x``: 3x3 average pooling (padding not counted), minus the
    input because the block adds the input back through its residual."""

    def __init__(self, pool_size: int = 3) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(pool_size, 1, pool_size // 2, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x) - x


@register_block("poolformer")
class PoolFormerBlock(nn.Module):
    """``x = x + s1 * mix(norm(x))``; ``x = x + s2 * ffn(x)`` with learnable per-channel
    layer scales s1, s2 (initialised to `layer_scale_init`).

    The paper's norm is GroupNorm with one group (over C, H, W): ``norm="group"`` gives
    that here. A conv-norm projection (3x3, with the stride) leads when in_ch != out_ch or
    stride > 1.

    Shapes: (B, in_ch, H, W) -> (B, out_ch, H/stride, W/stride).
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int = 1,
        norm: str | None = "group",
        act: str | None = "gelu",
        pool_size: int = 3,
        mlp_ratio: float = 4.0,
        layer_scale_init: float = 1e-5,
    ) -> None:
        super().__init__()
        act = act or "gelu"
        if in_ch != out_ch or stride > 1:
            self.proj: nn.Module = ConvNormAct(in_ch, out_ch, 3, stride=stride, norm=norm, act=None)
        else:
            self.proj = nn.Identity()
        groups = {"num_groups": 1} if norm == "group" else {}
        self.norm = create_norm(norm, out_ch, **groups)
        self.mixer = PoolMixer(pool_size)
        self.ffn = ConvFFN(out_ch, mlp_ratio, norm, act)
        if norm == "group":  # the FFN's norm too is GroupNorm(1, C) in the paper
            self.ffn[0] = create_norm("group", out_ch, num_groups=1)
        self.scale1 = nn.Parameter(torch.full((out_ch, 1, 1), layer_scale_init))
        self.scale2 = nn.Parameter(torch.full((out_ch, 1, 1), layer_scale_init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)  # (B, in_ch, H, W) -> (B, out_ch, H/s, W/s)
        x = x + self.scale1 * self.mixer(self.norm(x))
        return x + self.scale2 * self.ffn(x)
