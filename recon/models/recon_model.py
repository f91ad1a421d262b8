"""`ReconModel`: a registered network with its input normalisation and output scale.

Raw clear-pupil-normalised intensities (B, L, H, W) in, OPD (B, 1, H, W) in nm out:
what training optimises, what a checkpoint rebuilds and what the estimators run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from recon.nn.registry import create_model

__all__ = ["MIN_STD", "ModelOutput", "NormStats", "ReconModel", "build_model"]

MIN_STD = 1e-6
"""Floor of a standard deviation (dimensionless or nm), so that a flat channel stays finite."""

ModelOutput = torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]
"""(B, 1, H, W) OPD [nm]; with deep supervision in training, also the auxiliary maps [nm]."""


@dataclass(frozen=True)
class NormStats:
    """Per-wavelength intensity statistics and the OPD scale, saved in every checkpoint.

    Attributes:
        intensity_mean: (L,) mean intensity over the pupil, per wavelength (dimensionless).
        intensity_std: (L,) standard deviation over the pupil, per wavelength.
        opd_scale_nm: RMS of the training OPD over the pupil [nm].
        n_samples: number of training samples the statistics come from.
    """

    intensity_mean: tuple[float, ...]
    intensity_std: tuple[float, ...]
    opd_scale_nm: float
    n_samples: int

    def __post_init__(self) -> None:
        if len(self.intensity_mean) != len(self.intensity_std) or not self.intensity_mean:
            raise ValueError("intensity_mean and intensity_std need one value per wavelength")
        values = [*self.intensity_mean, *self.intensity_std, self.opd_scale_nm]
        if not np.all(np.isfinite(values)):
            raise ValueError(
                f"normalisation statistics are not finite (NaN/inf in the training data?): {self}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-able dict (what checkpoints store)."""
        d = asdict(self)
        d["intensity_mean"] = list(self.intensity_mean)
        d["intensity_std"] = list(self.intensity_std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NormStats:
        """Inverse of `to_dict`."""
        return cls(
            intensity_mean=tuple(float(v) for v in d["intensity_mean"]),
            intensity_std=tuple(float(v) for v in d["intensity_std"]),
            opd_scale_nm=float(d["opd_scale_nm"]),
            n_samples=int(d["n_samples"]),
        )


class ReconModel(nn.Module):
    """Network plus its normalisation: intensities (B, L, H, W) -> OPD (B, 1, H, W) [nm].

    Inputs are shifted and scaled per wavelength by the training statistics. A network
    with its own `opd_scale_nm` buffer (phenn, gru) already answers in nm; any other
    registered network answers OPD / `output_scale_nm`, which this wrapper multiplies.
    A network that returns ``(out, [aux, ...])`` in training (deep supervision) gets
    every map scaled.

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

    @property
    def n_wavelengths(self) -> int:
        """Input channels L."""
        return self.intensity_mean.numel()

    def normalize(self, intensity: torch.Tensor) -> torch.Tensor:
        """(B, L, H, W) intensities -> the same shape, zero mean and unit std per wavelength."""
        mean = self.intensity_mean.view(1, -1, 1, 1)
        std = self.intensity_std.view(1, -1, 1, 1)
        return (intensity - mean) / std

    def forward(self, intensity: torch.Tensor) -> ModelOutput:
        if intensity.ndim != 4 or intensity.shape[1] != self.n_wavelengths:
            raise ValueError(
                f"expected intensities (B, {self.n_wavelengths}, H, W), "
                f"got {tuple(intensity.shape)}"
            )
        y = self.net(self.normalize(intensity))  # (B, L, H, W) -> (B, 1, H, W)
        if isinstance(y, tuple):  # deep supervision: (out, [aux (B, 1, h, w)])
            out, aux = y
            return out * self.output_scale_nm, [a * self.output_scale_nm for a in aux]
        return y * self.output_scale_nm  # nm


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
