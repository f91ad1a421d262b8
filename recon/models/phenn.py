"""PhENN: the static U-Net reconstructor (Sinha et al., Optica 4, 1117, 2017).

Encoder-decoder with skip connections and residual blocks, built on `recon.nn.UNet`.
The selected wavelengths enter as input channels; the output is the OPD map in nm.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from recon.nn.registry import register_model
from recon.nn.unet import UNet

__all__ = ["PhENN", "phenn"]


class PhENN(nn.Module):
    """U-Net from normalised ZWFS intensities to the OPD map in nm.

    Shapes: (B, in_ch, H, W) normalised intensities (one channel per wavelength) ->
    (B, out_ch, H, W) OPD [nm]. H and W must be multiples of 2^(len(widths) - 1).

    The network body predicts the OPD divided by `opd_scale_nm` (targets of order 1);
    the explicit buffer `opd_scale_nm` turns it back into nm, so that the output is in
    nm whatever the training data (the scale is saved with the weights).

    Args:
        in_ch: input channels (number of wavelengths).
        out_ch: output channels (1: the OPD map).
        widths: encoder stage channels, finest first.
        block: registered block name ("residual": PhENN's residual units).
        blocks_per_stage: blocks per encoder and decoder stage.
        norm, act: normalisation and activation names (`recon.nn.layers`).
        bottleneck: optional registered block applied once at the deepest scale.
        down, up: down- and upsampling modes of `recon.nn.UNet`.
        opd_scale_nm: OPD scale [nm] of the network's unit output.
        deep_supervision: in training mode also return the U-Net's auxiliary maps [nm]
            (`recon.nn.UNet`); the training loss then adds `deep_supervision_loss`.
        block_kw: extra keyword arguments for every block.
    """

    def __init__(
        self,
        in_ch: int = 4,
        out_ch: int = 1,
        widths: Sequence[int] = (32, 64, 128, 256),
        block: str = "residual",
        blocks_per_stage: int = 2,
        norm: str | None = "batch",
        act: str | None = "relu",
        bottleneck: str | None = None,
        down: str = "conv",
        up: str = "transpose",
        opd_scale_nm: float = 100.0,
        deep_supervision: bool = False,
        block_kw: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not opd_scale_nm > 0:
            raise ValueError(f"opd_scale_nm must be > 0 nm, got {opd_scale_nm}")
        self.in_ch, self.out_ch = in_ch, out_ch
        self.unet = UNet(
            in_ch,
            out_ch,
            widths=widths,
            block=block,
            blocks_per_stage=blocks_per_stage,
            norm=norm,
            act=act,
            bottleneck=bottleneck,
            down=down,
            up=up,
            deep_supervision=deep_supervision,
            block_kw=block_kw,
        )
        self.register_buffer("opd_scale_nm", torch.tensor(float(opd_scale_nm)))

    @property
    def size_multiple(self) -> int:
        """H and W must be multiples of this."""
        return self.unet.size_multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        y = self.unet(x)  # (B, L, H, W) -> (B, 1, H, W), units of opd_scale_nm
        if isinstance(y, tuple):  # deep supervision in training: (out, [aux (B, 1, h, w)])
            out, aux = y
            return out * self.opd_scale_nm, [a * self.opd_scale_nm for a in aux]
        return y * self.opd_scale_nm  # -> nm


@register_model("phenn")
def phenn(in_ch: int = 4, out_ch: int = 1, **kwargs: Any) -> PhENN:
    """PhENN U-Net; see `PhENN` for the keyword arguments."""
    return PhENN(in_ch, out_ch, **kwargs)
