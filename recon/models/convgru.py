"""Convolutional GRU cells, the recurrence of the wavelength-recurrent network (`gru`).

`FusedConvGRUCell` (the default) is the 'reset after' form of cuDNN and `nn.GRU`: the
input terms of all three gates come from one convolution that can run on every
wavelength at once, and each step is one convolution of the hidden state.
`ConvGRUCell` (two convolutions of [x, h] per step) is the layout of checkpoints written
before the fused cell, which load with it.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["CELLS", "ConvGRUCell", "FusedConvGRUCell"]


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
