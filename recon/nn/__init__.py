"""Shared vision-block library: registries, layer factories, blocks, U-Net, complexity.

Importing this package fills the block and model registries; the loss registry lives
here too and is filled by importing `recon.losses` (which builds on this package)::

    from recon.nn import create_block, create_model, list_blocks
    block = create_block("edgevit", 32, 64, window=4)
    model = create_model("unet", in_ch=4, out_ch=1, block="elan", bottleneck="edgevit")
    features = create_model("encoder", in_ch=1, widths=[16, 32], block="dwsep")
    features.feature_info.channels(), features.feature_info.reduction()  # [16, 32], [1, 2]
    net = create_model("classifier", in_ch=1, out_ch=10, block="residual")
"""

from __future__ import annotations

from recon.nn.registry import (
    BLOCKS,
    LOSSES,
    MODELS,
    Registry,
    UnknownNameError,
    create_block,
    create_loss,
    create_model,
    get_block,
    get_loss,
    get_model,
    list_blocks,
    list_losses,
    list_models,
    register_block,
    register_loss,
    register_model,
)

# isort: split
from recon.nn.blocks import (
    AsymmetricBlock,
    BottleneckBlock,
    CSPStage,
    DepthwiseSeparableBlock,
    DilatedBlock,
    DoubleConvBlock,
    EdgeViTBlock,
    EELANBlock,
    ELANBlock,
    PartialResidualBlock,
    PoolFormerBlock,
    RepConv,
    ResidualBlock,
    ShuffleBlock,
    reparameterize_model,
)
from recon.nn.class_addition import add_class, quantile_normalise
from recon.nn.complexity import (
    ModelComplexity,
    count_flops,
    count_parameters,
    measure_latency,
    measure_throughput,
    profile_model,
)
from recon.nn.features import FeatureInfo
from recon.nn.heads import Classifier, ClassifierHead, SegmentationHead, Segmenter
from recon.nn.layers import ConvNormAct, LayerNorm2d, create_act, create_norm
from recon.nn.scaling import scale_widths, widths_for_cost, widths_for_flops
from recon.nn.timm_encoder import TimmEncoder, TimmUNet
from recon.nn.unet import UNet, UNetDecoder, UNetEncoder, deep_supervision_loss

__all__ = [
    "BLOCKS",
    "LOSSES",
    "MODELS",
    "AsymmetricBlock",
    "BottleneckBlock",
    "CSPStage",
    "Classifier",
    "ClassifierHead",
    "ConvNormAct",
    "DepthwiseSeparableBlock",
    "DilatedBlock",
    "DoubleConvBlock",
    "EELANBlock",
    "ELANBlock",
    "EdgeViTBlock",
    "FeatureInfo",
    "LayerNorm2d",
    "ModelComplexity",
    "PartialResidualBlock",
    "PoolFormerBlock",
    "Registry",
    "RepConv",
    "ResidualBlock",
    "SegmentationHead",
    "Segmenter",
    "ShuffleBlock",
    "TimmEncoder",
    "TimmUNet",
    "UNet",
    "UNetDecoder",
    "UNetEncoder",
    "UnknownNameError",
    "add_class",
    "count_flops",
    "count_parameters",
    "create_act",
    "create_block",
    "create_loss",
    "create_model",
    "create_norm",
    "deep_supervision_loss",
    "get_block",
    "get_loss",
    "get_model",
    "list_blocks",
    "list_losses",
    "list_models",
    "measure_latency",
    "measure_throughput",
    "profile_model",
    "quantile_normalise",
    "register_block",
    "register_loss",
    "register_model",
    "reparameterize_model",
    "scale_widths",
    "widths_for_cost",
    "widths_for_flops",
]
