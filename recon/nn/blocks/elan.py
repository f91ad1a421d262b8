"""ELAN and E-ELAN: efficient layer aggregation (Wang, Bochkovskiy & Liao, CVPR 2023,
"YOLOv7", Sec. 3.1 and Fig. 2(c, d))."""

from __future__ import annotations

import torch
import torch.nn as nn

from recon.nn.layers import ConvNormAct
from recon.nn.registry import register_block

__all__ = ["EELANBlock", "ELANBlock"]


@register_block("elan")
class ELANBlock(nn.Module):
    """ELAN: two 1x1 branches, a chain of 3x3 convs on the second, and a 1x1 transition over
    the concatenation of both branches and every second chain output.

    With ``groups = g > 1`` this is E-ELAN: *expand* the channels and cardinality of the
    computational blocks by g (group convs on g*h channels), *shuffle* the concatenated
    outputs into g groups, and *merge cardinality* by a grouped 1x1 transition whose g
    outputs are added.

    Shapes: (B, in_ch, H, W) -> m maps (B, g*h, H/s, W/s), m = 2 + depth // 2 ->
    concat (B, m*g*h) -> shuffle -> grouped transition (B, g*out_ch) -> sum over the g
    groups (B, out_ch, H/s, W/s), with h = round(out_ch * hidden_ratio).

    Args:
        stride: the two 1x1 branch convs become 3x3 strided convs when stride > 1.
        depth: number of 3x3 convs in the chain (YOLOv7: 4).
        hidden_ratio: width of each computational block per group, as a fraction of out_ch.
        groups: cardinality g (1: ELAN, 2: YOLOv7's E-ELAN).
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int = 1,
        norm: str | None = "batch",
        act: str | None = "silu",
        depth: int = 4,
        hidden_ratio: float = 0.25,
        groups: int = 1,
    ) -> None:
        super().__init__()
        if depth < 2 or depth % 2:
            raise ValueError(f"ELAN depth must be an even number >= 2, got {depth}")
        if groups < 1:
            raise ValueError(f"ELAN groups must be >= 1, got {groups}")
        g = groups
        hidden = max(1, round(out_ch * hidden_ratio))
        width = g * hidden  # expanded channels of each computational block
        k = 3 if stride > 1 else 1
        self.groups, self.out_ch = g, out_ch
        self.branch1 = ConvNormAct(in_ch, width, k, stride=stride, norm=norm, act=act)
        self.branch2 = ConvNormAct(in_ch, width, k, stride=stride, norm=norm, act=act)
        self.chain = nn.ModuleList(
            ConvNormAct(width, width, 3, groups=g, norm=norm, act=act) for _ in range(depth)
        )
        n_maps = 2 + depth // 2
        # Concatenated channels are ordered (map, group, h); ChannelShuffle(n_maps) reorders
        # them (group, h, map), so group i of the grouped transition sees the i-th group of
        # every map.
        self.shuffle = nn.ChannelShuffle(n_maps) if g > 1 else nn.Identity()
        self.transition = ConvNormAct(n_maps * width, g * out_ch, 1, groups=g, norm=norm, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.branch2(x)
        maps = [self.branch1(x), y]
        for i, conv in enumerate(self.chain):
            y = conv(y)
            if i % 2 == 1:
                maps.append(y)
        y = self.shuffle(torch.cat(maps, dim=1))  # m x (B, g*h, H, W) -> (B, m*g*h, H, W)
        y = self.transition(y)  # (B, m*g*h, H, W) -> (B, g*out, H, W)
        if self.groups > 1:  # merge cardinality: (B, g, out, H, W) -> (B, out, H, W)
            y = y.unflatten(1, (self.groups, self.out_ch)).sum(dim=1)
        return y


@register_block("e_elan")
class EELANBlock(ELANBlock):
    """E-ELAN (YOLOv7, Fig. 2(d)): `ELANBlock` with cardinality ``groups=2`` by default."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int = 1,
        norm: str | None = "batch",
        act: str | None = "silu",
        depth: int = 4,
        hidden_ratio: float = 0.25,
        groups: int = 2,
    ) -> None:
        super().__init__(in_ch, out_ch, stride, norm, act, depth, hidden_ratio, groups)
