"""Registered vision blocks, one concept per module; importing this package registers them.

Every block is built as ``Block(in_ch, out_ch, stride=1, norm=..., act=..., **options)`` and
maps (B, in_ch, H, W) -> (B, out_ch, H/stride, W/stride).
"""

from __future__ import annotations

from recon.nn.blocks.conv import (
    AsymmetricBlock,
    BottleneckBlock,
    DepthwiseSeparableBlock,
    DilatedBlock,
    DoubleConvBlock,
    ResidualBlock,
    ShuffleBlock,
)
from recon.nn.blocks.csp import CSPStage
from recon.nn.blocks.edgevit import EdgeViTBlock, GlobalSparseAttention
from recon.nn.blocks.elan import EELANBlock, ELANBlock
from recon.nn.blocks.poolformer import PoolFormerBlock
from recon.nn.blocks.prn import PartialResidualBlock
from recon.nn.blocks.repconv import RepConv, reparameterize_model

__all__ = [
    "AsymmetricBlock",
    "BottleneckBlock",
    "CSPStage",
    "DepthwiseSeparableBlock",
    "DilatedBlock",
    "DoubleConvBlock",
    "EELANBlock",
    "ELANBlock",
    "EdgeViTBlock",
    "GlobalSparseAttention",
    "PartialResidualBlock",
    "PoolFormerBlock",
    "RepConv",
    "ResidualBlock",
    "ShuffleBlock",
    "reparameterize_model",
]
