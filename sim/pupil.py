"""Pupil-plane grid and the grey-edged circular pupil (POPPY's `CircularAperture`)."""

from __future__ import annotations

import numpy as np

__all__ = ["PUPIL_THRESHOLD", "circular_pupil", "pupil_coordinates_m", "pupil_mask"]

PUPIL_THRESHOLD = 0.5
"""A pixel is 'inside the pupil' when its transmission is at least this (metrics, RMS)."""


def pupil_coordinates_m(npix: int, diameter_m: float) -> np.ndarray:
    """Pixel-centre coordinates [m] along one axis; the array width equals the diameter."""
    pitch = diameter_m / npix
    return (np.arange(npix) - (npix - 1) / 2.0) * pitch


def circular_pupil(npix: int, diameter_m: float) -> np.ndarray:
    """Transmission (npix, npix) of a circular pupil with grey (area-weighted) edge pixels.

    Made by POPPY's own `CircularAperture(gray_pixel=True)` on a `Wavefront` whose
    array width is the pupil diameter, so the POPPY reference and the fast engine
    see the very same pupil.
    """
    import astropy.units as u
    import poppy

    wave = poppy.Wavefront(diam=diameter_m * u.m, npix=npix, oversample=1)
    aperture = poppy.CircularAperture(radius=diameter_m / 2 * u.m, gray_pixel=True)
    return np.asarray(aperture.get_transmission(wave), dtype=np.float64)


def pupil_mask(pupil: np.ndarray) -> np.ndarray:
    """Boolean (H, W): pixels counted as inside the pupil (transmission >= 0.5)."""
    return pupil >= PUPIL_THRESHOLD
