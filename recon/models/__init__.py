"""Registered reconstruction networks and the inference wrapper shared by all of them.

Importing this package registers ``phenn`` and ``gru`` in `recon.nn`'s model registry.
`build_model` turns any registered model into a `ReconModel`: raw clear-pupil-normalised
intensities in, OPD in nm out (input normalisation and output scale inside), which is
what training optimises and what `recon.checkpoint.load_checkpoint` returns.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from recon.models.gru import ConvGRUCell, WavelengthGRUNet, gru
from recon.models.phenn import PhENN, phenn
from recon.nn.registry import create_model
from recon.normalization import NormStats

__all__ = [
    "ConvGRUCell",
    "PhENN",
    "ReconModel",
    "WavelengthGRUNet",
    "build_model",
    "gru",
    "phenn",
]


class ReconModel(nn.Module):
    """Network plus its normalisation: intensities (B, L, H, W) -> OPD (B, 1, H, W) [nm].

    Inputs are shifted and scaled per wavelength by the training statistics. A network
    with its own `opd_scale_nm` buffer (phenn, gru) already answers in nm; any other
    registered network answers OPD / `output_scale_nm`, which this wrapper multiplies.

    Attributes:
        net: the registered network (normalised inputs -> OPD [nm] or scaled OPD).
        intensity_mean, intensity_std: (L,) buffers, dimensionless.
        output_scale_nm: scalar buffer, 1 when `net` answers in nm.
    """

    def __init__(self, net: nn.Module, stats: NormStats) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("intensity_mean", torch.tensor(stats.intensity_mean))
        self.register_buffer("intensity_std", torch.tensor(stats.intensity_std))
        own_scale = isinstance(getattr(net, "opd_scale_nm", None), torch.Tensor)
        if own_scale:
            net.opd_scale_nm.fill_(stats.opd_scale_nm)  # type: ignore[union-attr,operator]
        self.register_buffer(
            "output_scale_nm", torch.tensor(1.0 if own_scale else stats.opd_scale_nm)
        )

    @property
    def opd_scale_nm(self) -> float:
        """OPD scale [nm] of the network's order-1 outputs."""
        inner = getattr(self.net, "opd_scale_nm", None)
        scale = inner if isinstance(inner, torch.Tensor) else self.output_scale_nm
        return float(scale)

    def normalize(self, intensity: torch.Tensor) -> torch.Tensor:
        """(B, L, H, W) intensities -> the same shape, zero mean and unit std per wavelength."""
        mean = self.intensity_mean.view(1, -1, 1, 1)
        std = self.intensity_std.view(1, -1, 1, 1)
        return (intensity - mean) / std

    def forward(self, intensity: torch.Tensor) -> torch.Tensor:
        if intensity.ndim != 4 or intensity.shape[1] != self.intensity_mean.numel():
            raise ValueError(
                f"expected intensities (B, {self.intensity_mean.numel()}, H, W), "
                f"got {tuple(intensity.shape)}"
            )
        return self.net(self.normalize(intensity)) * self.output_scale_nm  # (B, 1, H, W) nm

    @torch.no_grad()
    def estimate(self, intensities: torch.Tensor | np.ndarray) -> torch.Tensor:
        """OPD [nm] from intensities (L, H, W) -> (H, W), or (B, L, H, W) -> (B, H, W).

        Runs in eval mode on the model's device; returns a CPU float32 tensor.
        """
        x = (
            intensities
            if torch.is_tensor(intensities)
            else torch.from_numpy(np.asarray(intensities))
        )
        single = x.ndim == 3
        if single:
            x = x.unsqueeze(0)  # (L, H, W) -> (1, L, H, W)
        ref = self.intensity_mean
        was_training = self.training
        self.eval()
        try:
            y = self(x.to(device=ref.device, dtype=ref.dtype))[:, 0]  # (B, 1, H, W) -> (B, H, W)
        finally:
            self.train(was_training)
        y = y.float().cpu()
        return y[0] if single else y


def build_model(
    arch: str, kwargs: dict[str, Any], n_wavelengths: int, stats: NormStats
) -> ReconModel:
    """`ReconModel` around registered model `arch` built with ``in_ch=n_wavelengths, out_ch=1``.

    Raises `ValueError` when the statistics do not have one entry per wavelength.
    """
    if len(stats.intensity_mean) != n_wavelengths:
        raise ValueError(
            f"normalisation statistics have {len(stats.intensity_mean)} wavelengths, "
            f"the model {n_wavelengths}"
        )
    net = create_model(arch, **{**kwargs, "in_ch": n_wavelengths, "out_ch": 1})
    return ReconModel(net, stats)
