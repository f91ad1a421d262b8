"""Optical materials: refractive indices of the dot's substrates."""

from __future__ import annotations

import numpy as np

__all__ = ["fused_silica_index"]


def fused_silica_index(wavelength_um: np.ndarray) -> np.ndarray:
    """Refractive index of fused silica (Malitson 1965 Sellmeier), wavelength in um."""
    w2 = np.asarray(wavelength_um, dtype=float) ** 2
    b = (0.6961663, 0.4079426, 0.8974794)
    c = (0.0684043**2, 0.1162414**2, 9.896161**2)
    return np.sqrt(1 + sum(bi * w2 / (w2 - ci) for bi, ci in zip(b, c, strict=True)))
