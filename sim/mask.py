"""The focal-plane phase dot: its footprint on the focal samples, its phase per wavelength."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from sim.config import MaskConfig
from sim.geometry import disk_cell_areas
from sim.materials import fused_silica_index

__all__ = ["dot_footprint", "dot_phase_rad", "focal_coordinates", "fused_silica_index"]


def focal_coordinates(box_samples: int, samples_per_lambda0_d: float) -> np.ndarray:
    """Sample-centre coordinates [lambda0/D] across the focal box, symmetric about 0."""
    return (np.arange(box_samples) - (box_samples - 1) / 2.0) / samples_per_lambda0_d


def dot_footprint(
    coords: np.ndarray | torch.Tensor,
    diameter: float | torch.Tensor,
    antialias: bool,
) -> np.ndarray | torch.Tensor:
    """Fraction (M, M) of each focal sample's cell covered by the dot.

    coords: sample centres along one axis, uniform (same unit as `diameter`). Hard
    edge: 1 where the centre lies inside the dot. Anti-aliased: the exact covered area
    of each cell (`sim.geometry.disk_cell_areas`), differentiable in `diameter` when
    it is a tensor (calibration fits it). NumPy in, NumPy out.
    """
    as_numpy = not isinstance(coords, torch.Tensor)
    u = torch.as_tensor(coords, dtype=torch.float64)
    d = torch.as_tensor(diameter, dtype=torch.float64, device=u.device)
    if antialias:
        pitch = u[1] - u[0]
        edges = torch.cat((u - pitch / 2, u[-1:] + pitch / 2))
        zero = torch.zeros((), dtype=torch.float64, device=u.device)
        out = disk_cell_areas(edges, (zero, zero), d / 2)
    else:
        yy, xx = torch.meshgrid(u, u, indexing="ij")
        out = (torch.hypot(xx, yy) <= d / 2).to(torch.float64)
    return out.numpy() if as_numpy else out


def dot_phase_rad(wavelengths_um: Sequence[float], mask: MaskConfig) -> np.ndarray:
    """Dot phase theta [rad] at each wavelength: 2 pi * OPD depth / lambda (maybe dispersive)."""
    w = np.asarray(wavelengths_um, dtype=float)
    depth_nm = np.full_like(w, mask.opd_depth_nm)
    if mask.substrate == "fused_silica":
        n, n0 = fused_silica_index(w), fused_silica_index(np.array(mask.lambda0_um))
        depth_nm = depth_nm * (n - 1) / (n0 - 1)
    return 2 * np.pi * depth_nm / (w * 1e3)
