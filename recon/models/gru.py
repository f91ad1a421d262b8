"""Wavelength-recurrent reconstructor: shared encoder, ConvGRU along the wavelengths, decoder.

Layout after Kang et al. (encoder filters 24-48-96-192, depthwise-separable ConvGRU,
NPCC loss) and the GRU network of Allan et al. (SPIE 2020):

1. one encoder (`recon.nn.UNetEncoder`, one input channel) is shared by all wavelengths
   and applied to each frame: the same features whatever the wavelength;
2. at every skip scale a convolutional GRU runs along the wavelength axis, in the order
   of the wavelengths, and its final hidden state is that scale's feature;
3. a `recon.nn.UNetDecoder` with skip connections maps the hidden states to the OPD [nm].

Why a GRU at every skip scale rather than only at the bottleneck: the multi-wavelength
information that lifts the phase ambiguity of one ZWFS frame (beyond ~[-125, +375] nm at
1 um) is local, pixel by pixel. With a bottleneck-only GRU the decoder's
high-resolution skips would come from single frames and carry no cross-wavelength
information; the fine scales would have to be inferred from the coarse state alone. A
GRU per scale fuses the wavelengths at full resolution too, for a modest cost (the
cells are small convolutions, depthwise-separable by default).

`step(frame, state)` advances the recurrence by one wavelength frame and `decode(state)`
reads the OPD out at any point, so frames can be fed as they arrive; `forward` is the
same computation unrolled (encoder batched over all frames).

Speed (the wavelength loop is serial): with the default ``cell="fused"``
(`FusedConvGRUCell`) the input's share of all three gates is one convolution over every
wavelength at once, before the loop, and each step is one convolution of the hidden
state; ``cell="classic"`` (`ConvGRUCell`, two convolutions of [x, h] per step) is the
layout of checkpoints written before the fused cell, which load with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from recon.nn.registry import register_model
from recon.nn.unet import UNetDecoder, UNetEncoder, check_divisible

__all__ = ["CELLS", "ConvGRUCell", "FusedConvGRUCell", "WavelengthGRUNet", "gru"]

State = list[torch.Tensor]
"""Hidden states, one (B, C_i, H / 2^i, W / 2^i) per scale, finest first."""


def _conv(in_ch: int, out_ch: int, kernel_size: int, separable: bool) -> nn.Module:
    """'Same' conv; separable: depthwise k x k then pointwise 1 x 1 (Kang et al.)."""
    pad = kernel_size // 2
    if not separable:
        return nn.Conv2d(in_ch, out_ch, kernel_size, padding=pad)
    return nn.Sequential(
        nn.Conv2d(in_ch, in_ch, kernel_size, padding=pad, groups=in_ch, bias=False),
        nn.Conv2d(in_ch, out_ch, 1),
    )


class ConvGRUCell(nn.Module):
    """Convolutional GRU cell (Ballas et al., ICLR 2016), optionally depthwise-separable.

    z, r = sigmoid(W_zr * [x, h]);  n = tanh(W_n * [x, r h]);  h' = (1 - z) h + z n

    Shapes: x (B, in_ch, H, W), h (B, hidden_ch, H, W) or None (zeros) ->
    h' (B, hidden_ch, H, W).
    """

    def __init__(
        self, in_ch: int, hidden_ch: int, kernel_size: int = 3, separable: bool = True
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.hidden_ch = hidden_ch
        self.gates = _conv(in_ch + hidden_ch, 2 * hidden_ch, kernel_size, separable)
        self.candidate = _conv(in_ch + hidden_ch, hidden_ch, kernel_size, separable)

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None) -> torch.Tensor:
        if h is None:
            h = x.new_zeros(x.shape[0], self.hidden_ch, *x.shape[2:])
        z, r = torch.sigmoid(self.gates(torch.cat([x, h], 1))).chunk(2, dim=1)  # 2x (B, C, H, W)
        n = torch.tanh(self.candidate(torch.cat([x, r * h], 1)))  # (B, C, H, W)
        return (1 - z) * h + z * n


class FusedConvGRUCell(nn.Module):
    """Convolutional GRU with fused gates, the 'reset after' form of cuDNN and `nn.GRU`:

    [x_z, x_r, x_n] = W_x * x;  [h_z, h_r, h_n] = W_h * h
    z = sigmoid(x_z + h_z);  r = sigmoid(x_r + h_r);  n = tanh(x_n + r h_n)
    h' = (1 - z) h + z n

    `project(x)` (all three gates' input terms) can run on every wavelength at once;
    `forward(gx, h)` is then one convolution of h per step. Shapes: x (B, in_ch, H, W),
    h (B, hidden_ch, H, W) or None (zeros) -> h' (B, hidden_ch, H, W).
    """

    def __init__(
        self, in_ch: int, hidden_ch: int, kernel_size: int = 3, separable: bool = True
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.hidden_ch = hidden_ch
        self.x_gates = _conv(in_ch, 3 * hidden_ch, kernel_size, separable)
        self.h_gates = _conv(hidden_ch, 3 * hidden_ch, kernel_size, separable)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Input terms of the three gates: (N, in_ch, H, W) -> (N, 3 hidden_ch, H, W)."""
        return self.x_gates(x)

    def forward(self, gx: torch.Tensor, h: torch.Tensor | None = None) -> torch.Tensor:
        """One step from the projected input `gx` (B, 3C, H, W) and the state h."""
        xz, xr, xn = gx.chunk(3, dim=1)
        if h is None:  # h = 0: W_h * h is the bias of the last convolution, no conv needed
            last = self.h_gates[-1] if isinstance(self.h_gates, nn.Sequential) else self.h_gates
            hz, hr, hn = last.bias.view(1, -1, 1, 1).chunk(3, dim=1)
            z, n = torch.sigmoid(xz + hz), torch.tanh(xn + torch.sigmoid(xr + hr) * hn)
            return z * n  # (1 - z) * 0 + z * n
        hz, hr, hn = self.h_gates(h).chunk(3, dim=1)  # one convolution per step
        z, r = torch.sigmoid(xz + hz), torch.sigmoid(xr + hr)
        n = torch.tanh(xn + r * hn)
        return (1 - z) * h + z * n


CELLS = {"fused": FusedConvGRUCell, "classic": ConvGRUCell}
"""ConvGRU cells by name (`WavelengthGRUNet(cell=...)`)."""


class WavelengthGRUNet(nn.Module):
    """Shared encoder per frame, ConvGRU along the wavelengths at every scale, decoder.

    Shapes: (B, L, H, W) normalised intensities, wavelengths in recurrent order ->
    (B, out_ch, H, W) OPD [nm]. H and W must be multiples of 2^(len(widths) - 1). Any L
    works; `in_ch` records the number the network was trained for.

    The body predicts the OPD divided by the buffer `opd_scale_nm`, which turns the
    output back into nm (saved with the weights).

    Args:
        in_ch: number of wavelengths (frames) the network is trained on.
        out_ch: output channels (1: the OPD map).
        widths: encoder and hidden channels per scale, finest first.
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
        block_kw: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not opd_scale_nm > 0:
            raise ValueError(f"opd_scale_nm must be > 0 nm, got {opd_scale_nm}")
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {cell!r}")
        widths = list(widths)
        self.in_ch, self.out_ch, self.bidirectional = in_ch, out_ch, bidirectional
        self.fused = cell == "fused"
        cell_cls = CELLS[cell]
        self.encoder = UNetEncoder(1, widths, block, blocks_per_stage, norm, act, down, block_kw)
        self.cells = nn.ModuleList(cell_cls(c, c, kernel_size, separable) for c in widths)
        self.cells_backward = nn.ModuleList(
            cell_cls(c, c, kernel_size, separable) for c in widths if bidirectional
        )
        self.fuse = nn.ModuleList(nn.Conv2d(2 * c, c, 1) for c in widths if bidirectional)
        self.decoder = UNetDecoder(widths, block, blocks_per_stage, norm, act, up, block_kw)
        self.head = nn.Conv2d(widths[0], out_ch, 1)
        self.register_buffer("opd_scale_nm", torch.tensor(float(opd_scale_nm)))

    @property
    def size_multiple(self) -> int:
        """H and W must be multiples of this."""
        return self.encoder.size_multiple

    def step(self, frame: torch.Tensor, state: State | None = None) -> State:
        """Advance the GRUs by one wavelength frame.

        Args:
            frame: (B, 1, H, W) or (B, H, W) normalised intensity at the next wavelength.
            state: the previous hidden states (None before the first frame).

        Returns:
            The new hidden states, one (B, C_i, H / 2^i, W / 2^i) per scale.
        """
        if self.bidirectional:
            raise ValueError("step() needs a unidirectional GRU (bidirectional=False)")
        if frame.ndim == 3:
            frame = frame.unsqueeze(1)  # (B, H, W) -> (B, 1, H, W)
        features = self.encoder(frame)  # scales x (B, C_i, h_i, w_i)
        if self.fused:
            features = [cell.project(f) for cell, f in zip(self.cells, features, strict=True)]
        prev = state if state is not None else [None] * len(features)
        return [cell(f, h) for cell, f, h in zip(self.cells, features, prev, strict=True)]

    def decode(self, state: State) -> torch.Tensor:
        """OPD [nm] (B, out_ch, H, W) from the hidden states of every scale."""
        y = self.decoder(state)  # -> (B, C_0, H, W)
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
        seqs = [f.reshape(b, n_wl, *f.shape[1:]) for f in self.encoder(frames)]  # (B, L, C, h, w)
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
        return self.decode(state)


@register_model("gru")
def gru(in_ch: int = 4, out_ch: int = 1, **kwargs: Any) -> WavelengthGRUNet:
    """Wavelength-recurrent ConvGRU network; see `WavelengthGRUNet` for the keywords."""
    return WavelengthGRUNet(in_ch, out_ch, **kwargs)
