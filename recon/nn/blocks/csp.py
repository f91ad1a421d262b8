"""CSP stage: Cross Stage Partial connections (Wang et al., CVPRW 2020, "CSPNet")."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from recon.nn.blocks import conv as _conv  # noqa: F401  (registers the default inner block)
from recon.nn.layers import ConvNormAct
from recon.nn.registry import create_block, register_block

__all__ = ["CSPStage"]


@register_block("csp")
class CSPStage(nn.Module):
    """Split the channels in two; one part runs through `depth` blocks and a transition,
    the other crosses the stage untouched; concatenate and merge with a 1x1 transition.

    The cross part halves the compute of the stage and gives the gradient a short path
    (CSPNet, Fig. 2(b): CSPDenseNet with transitions on both sides of the concat).

    Shapes: (B, in_ch, H, W) -> (B, 2h, H/s, W/s) -> two (B, h, ...) parts ->
    (B, 2h, ...) -> (B, out_ch, H/s, W/s), with h = round(out_ch * split_ratio).

    Args:
        stride: a 3x3 strided conv-norm-act leads the stage when stride > 1 (CSPDarknet).
        depth: number of inner blocks on the computed part.
        inner_block: registered block name for the inner blocks.
        split_ratio: width of each part as a fraction of out_ch.
        inner_kw: extra keyword arguments for the inner blocks.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int = 1,
        norm: str | None = "batch",
        act: str | None = "relu",
        depth: int = 1,
        inner_block: str = "residual",
        split_ratio: float = 0.5,
        inner_kw: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if inner_block == "csp":
            raise ValueError("inner_block of a CSP stage cannot be 'csp'")
        hidden = max(1, round(out_ch * split_ratio))
        self.hidden = hidden
        k = 3 if stride > 1 else 1
        self.split = ConvNormAct(in_ch, 2 * hidden, k, stride=stride, norm=norm, act=act)
        kw = dict(inner_kw or {})
        self.blocks = nn.Sequential(
            *(
                create_block(inner_block, hidden, hidden, norm=norm, act=act, **kw)
                for _ in range(depth)
            )
        )
        self.part_transition = ConvNormAct(hidden, hidden, 1, norm=norm, act=act)
        self.transition = ConvNormAct(2 * hidden, out_ch, 1, norm=norm, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cross, part = self.split(x).chunk(2, dim=1)  # (B, 2h, H, W) -> 2 x (B, h, H, W)
        part = self.part_transition(self.blocks(part))
        return self.transition(torch.cat([cross, part], dim=1))  # (B, 2h) -> (B, out_ch)
