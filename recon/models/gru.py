"""Wavelength-recurrent reconstructor: ConvGRU along the wavelengths, U-Net decoder.

Layout after Kang et al. (encoder filters 24-48-96-192, depthwise-separable ConvGRU,
NPCC loss) and the GRU network of Allan et al. (SPIE 2020), with the recurrence where it
pays for itself (`recurrent_scales`):

1. the coarse scales (the last `recurrent_scales` of `widths`): one encoder is shared by
   all wavelengths and applied to each frame (the wavelengths folded into the batch),
   after a lossless space-to-depth of the frame to the first recurrent scale
   (`pixel_unshuffle`); at each of these scales a convolutional GRU runs along the
   wavelength axis, in the order of the wavelengths, and its final hidden state is that
   scale's feature;
2. the fine scales (the others): the wavelengths stacked as input channels, PhENN's
   encoder (`recon.nn.UNetEncoder`), so the full-resolution skips fuse every wavelength
   pixel by pixel at the cost of one map;
3. a `recon.nn.UNetDecoder` with skip connections maps all of them to the OPD [nm].

Why not the recurrence at every scale (``recurrent_scales=None``, the layout of
checkpoints written before it was a choice): per-frame encoding and a GRU at full
resolution cost each training sample L times the encoder and L serial cell steps over
the largest maps; on a 2-core CPU that network made a third of PhENN's optimiser steps in
the same wall time and ended far behind it (docs/results.md, study c). The coarse scales
hold most of the channels and few pixels, so the recurrence there is cheap. Measured
against PhENN per training sample (CPU, 64 px, 4 wavelengths, the quick-start widths):
about 1.1x with the default ``recurrent_scales=1``, 1.5x with 2, 3.6-7x with None.

`step(frame, state)` advances the recurrence by one wavelength frame and
`decode(state, x)` reads the OPD out (the stacked fine scales need the frames `x` of
every wavelength), so the recurrent scales can run as frames arrive; `forward` is the
same computation unrolled (the shared encoder batched over all frames, the input terms of
the fused cell's gates over all wavelengths in one convolution before the loop).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from recon.models.convgru import CELLS, ConvGRUCell, FusedConvGRUCell
from recon.nn.registry import register_model
from recon.nn.unet import UNetDecoder, UNetEncoder, check_divisible

__all__ = ["CELLS", "ConvGRUCell", "FusedConvGRUCell", "WavelengthGRUNet", "gru"]

State = list[torch.Tensor]
"""Hidden states, one (B, C_i, H / 2^i, W / 2^i) per recurrent scale, finest first."""


class WavelengthGRUNet(nn.Module):
    """Stacked fine scales, a shared per-frame encoder and ConvGRUs at the coarse scales,
    a U-Net decoder.

    Shapes: (B, L, H, W) normalised intensities, wavelengths in recurrent order ->
    (B, out_ch, H, W) OPD [nm]. H and W must be multiples of 2^(len(widths) - 1). With
    stacked fine scales L must equal `in_ch`; with the recurrence at every scale
    (``recurrent_scales=None``) any L works.

    The body predicts the OPD divided by the buffer `opd_scale_nm`, which turns the
    output back into nm (saved with the weights).

    Args:
        in_ch: number of wavelengths (frames) the network is trained on.
        out_ch: output channels (1: the OPD map).
        widths: channels per scale, finest first (the hidden channels at recurrent scales).
        recurrent_scales: how many of the coarsest scales run the per-frame encoder and a
            ConvGRU along the wavelengths (1 to len(widths)); the finer ones take the
            wavelengths stacked as channels. None: every scale (the layout before this
            argument existed).
        block, blocks_per_stage, norm, act, down, up: see `recon.nn.UNet`.
        kernel_size: ConvGRU kernel size (odd).
        separable: depthwise-separable ConvGRU convolutions (Kang et al.).
        bidirectional: a second GRU per scale runs from the last wavelength to the first;
            the two final states are fused by a 1 x 1 conv (`step` is then unavailable).
        cell: "fused" (`FusedConvGRUCell`, fast) or "classic" (`ConvGRUCell`).
        opd_scale_nm: OPD scale [nm] of the network's unit output.
        block_kw: extra keyword arguments for every block.
    """

    def __init__(
        self,
        in_ch: int = 4,
        out_ch: int = 1,
        widths: Sequence[int] = (24, 48, 96, 192),
        block: str = "residual",
        blocks_per_stage: int = 1,
        norm: str | None = "batch",
        act: str | None = "relu",
        down: str = "conv",
        up: str = "transpose",
        kernel_size: int = 3,
        separable: bool = True,
        bidirectional: bool = False,
        opd_scale_nm: float = 100.0,
        cell: str = "fused",
        recurrent_scales: int | None = 1,
        block_kw: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not opd_scale_nm > 0:
            raise ValueError(f"opd_scale_nm must be > 0 nm, got {opd_scale_nm}")
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {cell!r}")
        widths = list(widths)
        n_rec = len(widths) if recurrent_scales is None else recurrent_scales
        if not 1 <= n_rec <= len(widths):
            raise ValueError(
                f"recurrent_scales must be 1 to len(widths) = {len(widths)} or None, "
                f"got {recurrent_scales}"
            )
        self.in_ch, self.out_ch, self.bidirectional = in_ch, out_ch, bidirectional
        self.fused = cell == "fused"
        self.n_stacked = len(widths) - n_rec  # fine scales with the wavelengths stacked
        self.patch = 2**self.n_stacked  # space-to-depth factor of each frame
        cell_cls = CELLS[cell]
        rec_widths = widths[self.n_stacked :]
        self.stacked: UNetEncoder | None = None
        if self.n_stacked:
            fine = widths[: self.n_stacked]
            self.stacked = UNetEncoder(
                in_ch, fine, block, blocks_per_stage, norm, act, down, block_kw
            )
        self.encoder = UNetEncoder(
            self.patch**2, rec_widths, block, blocks_per_stage, norm, act, down, block_kw
        )
        self.cells = nn.ModuleList(cell_cls(c, c, kernel_size, separable) for c in rec_widths)
        self.cells_backward = nn.ModuleList(
            cell_cls(c, c, kernel_size, separable) for c in rec_widths if bidirectional
        )
        self.fuse = nn.ModuleList(nn.Conv2d(2 * c, c, 1) for c in rec_widths if bidirectional)
        self.decoder = UNetDecoder(widths, block, blocks_per_stage, norm, act, up, block_kw)
        self.head = nn.Conv2d(widths[0], out_ch, 1)
        self.register_buffer("opd_scale_nm", torch.tensor(float(opd_scale_nm)))

    @property
    def size_multiple(self) -> int:
        """H and W must be multiples of this."""
        return self.patch * self.encoder.size_multiple

    def _encode_frames(self, frames: torch.Tensor) -> list[torch.Tensor]:
        """Shared encoder: (N, 1, H, W) -> [(N, C_i, H / 2^i, W / 2^i)], recurrent scales."""
        if self.patch > 1:  # (N, 1, H, W) -> (N, p^2, H / p, W / p), lossless
            frames = F.pixel_unshuffle(frames, self.patch)
        return self.encoder(frames)

    def step(self, frame: torch.Tensor, state: State | None = None) -> State:
        """Advance the GRUs by one wavelength frame.

        Args:
            frame: (B, 1, H, W) or (B, H, W) normalised intensity at the next wavelength.
            state: the previous hidden states (None before the first frame).

        Returns:
            The new hidden states, one (B, C_i, H / 2^i, W / 2^i) per recurrent scale.
        """
        if self.bidirectional:
            raise ValueError("step() needs a unidirectional GRU (bidirectional=False)")
        if frame.ndim == 3:
            frame = frame.unsqueeze(1)  # (B, H, W) -> (B, 1, H, W)
        check_divisible(frame, self.size_multiple, "WavelengthGRUNet.step")
        features = self._encode_frames(frame)  # recurrent scales x (B, C_i, h_i, w_i)
        if self.fused:
            features = [cell.project(f) for cell, f in zip(self.cells, features, strict=True)]
        prev = state if state is not None else [None] * len(features)
        return [cell(f, h) for cell, f, h in zip(self.cells, features, prev, strict=True)]

    def decode(self, state: State, x: torch.Tensor | None = None) -> torch.Tensor:
        """OPD [nm] (B, out_ch, H, W) from the hidden states of the recurrent scales and,
        when the network has stacked fine scales, the frames x (B, in_ch, H, W)."""
        fine: list[torch.Tensor] = []
        if self.stacked is not None:
            if x is None or x.shape[1] != self.in_ch:
                got = "none" if x is None else f"{x.shape[1]} frames"
                raise ValueError(
                    f"decode() needs the {self.in_ch} wavelength frames (B, {self.in_ch}, H, "
                    f"W) for the stacked fine scales, got {got}"
                )
            fine = self.stacked(x)  # (B, L, H, W) -> fine scales x (B, C_i, H / 2^i, ...)
        y = self.decoder([*fine, *state])  # -> (B, C_0, H, W)
        return self.head(y) * self.opd_scale_nm  # -> (B, out_ch, H, W) [nm]

    def _unroll(self, cell: nn.Module, seq: torch.Tensor) -> torch.Tensor:
        """Final hidden state of `cell` run over seq (B, L, C, h, w) along L."""
        if self.fused:  # input terms of every wavelength in one convolution
            b, n_wl = seq.shape[:2]
            gx = cell.project(seq.flatten(0, 1))  # (B*L, C, h, w) -> (B*L, 3C, h, w)
            seq = gx.reshape(b, n_wl, *gx.shape[1:])  # -> (B, L, 3C, h, w)
        h = None
        for t in range(seq.shape[1]):
            h = cell(seq[:, t], h)
        assert h is not None
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_divisible(x, self.size_multiple, "WavelengthGRUNet")
        b, n_wl, height, width = x.shape
        frames = x.reshape(b * n_wl, 1, height, width)  # (B, L, H, W) -> (B*L, 1, H, W)
        seqs = [f.reshape(b, n_wl, *f.shape[1:]) for f in self._encode_frames(frames)]
        state = [self._unroll(cell, s) for cell, s in zip(self.cells, seqs, strict=True)]
        if self.bidirectional:
            back = [
                self._unroll(cell, s.flip(1))
                for cell, s in zip(self.cells_backward, seqs, strict=True)
            ]
            state = [
                fuse(torch.cat([f, bk], 1))  # (B, 2C, h, w) -> (B, C, h, w)
                for fuse, f, bk in zip(self.fuse, state, back, strict=True)
            ]
        return self.decode(state, x)


@register_model("gru")
def gru(in_ch: int = 4, out_ch: int = 1, **kwargs: Any) -> WavelengthGRUNet:
    """Wavelength-recurrent ConvGRU network; see `WavelengthGRUNet` for the keywords."""
    return WavelengthGRUNet(in_ch, out_ch, **kwargs)
