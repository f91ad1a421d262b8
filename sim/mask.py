"""The focal-plane phase dot: its sampled footprint and its phase at each wavelength."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sim.config import MaskConfig

__all__ = ["dot_footprint", "dot_phase_rad", "focal_coordinates", "fused_silica_index"]


def focal_coordinates(box_samples: int, samples_per_lambda0_d: float) -> np.ndarray:
    """Sample-centre coordinates [lambda0/D] across the focal box, symmetric about 0."""
    return (np.arange(box_samples) - (box_samples - 1) / 2.0) / samples_per_lambda0_d


def dot_footprint(
    coords: np.ndarray, diameter: float, antialias: bool, subsamples: int = 8
) -> np.ndarray:
    """Fraction (M, M) of each focal sample's cell covered by the dot.

    coords: sample centres along one axis (same unit as `diameter`). Hard edge:
    1 where the centre lies inside the dot. Anti-aliased: the covered area of each
    cell, estimated on `subsamples` x `subsamples` points per cell.
    """
    radius = diameter / 2.0
    if not antialias or subsamples == 1:
        yy, xx = np.meshgrid(coords, coords, indexing="ij")
        return (np.hypot(xx, yy) <= radius).astype(np.float64)
    pitch = coords[1] - coords[0]
    offsets = ((np.arange(subsamples) + 0.5) / subsamples - 0.5) * pitch
    fine = (coords[:, None] + offsets[None, :]).ravel()  # (M * s,)
    yy, xx = np.meshgrid(fine, fine, indexing="ij")
    inside = (np.hypot(xx, yy) <= radius).astype(np.float64)
    m = coords.size
    return inside.reshape(m, subsamples, m, subsamples).mean(axis=(1, 3))


def fused_silica_index(wavelength_um: np.ndarray) -> np.ndarray:
    """Refractive index of fused silica (Malitson 1965 Sellmeier), wavelength in um."""
    w2 = np.asarray(wavelength_um, dtype=float) ** 2
    b = (0.6961663, 0.4079426, 0.8974794)
    c = (0.0684043**2, 0.1162414**2, 9.896161**2)
    return np.sqrt(1 + sum(bi * w2 / (w2 - ci) for bi, ci in zip(b, c, strict=True)))


def dot_phase_rad(wavelengths_um: Sequence[float], mask: MaskConfig) -> np.ndarray:
    """Dot phase theta [rad] at each wavelength: 2 pi * OPD depth / lambda (maybe dispersive)."""
    w = np.asarray(wavelengths_um, dtype=float)
    depth_nm = np.full_like(w, mask.opd_depth_nm)
    if mask.substrate == "fused_silica":
        n, n0 = fused_silica_index(w), fused_silica_index(np.array(mask.lambda0_um))
        depth_nm = depth_nm * (n - 1) / (n0 - 1)
    return 2 * np.pi * depth_nm / (w * 1e3)
