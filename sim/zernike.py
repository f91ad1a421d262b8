"""Noll-indexed Zernike basis on the sampled pupil, in POPPY's convention.

Modes follow `poppy.zernike.zernike1` (Noll 1976 normalisation: unit RMS over the
unit disk) evaluated at the pixel centres with rho = r / (D/2), the radius
convention of `poppy.ZernikeWFE` and `CircularAperture`; zero outside rho = 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sim.pupil import pupil_coordinates_m

__all__ = ["radial_order", "zernike_basis"]


def zernike_basis(modes: Sequence[int], npix: int, diameter_m: float = 1.0) -> np.ndarray:
    """Zernike modes (M, npix, npix), float64, unit RMS over the pupil, 0 outside it.

    modes: Noll indices j (1 = piston).
    """
    from poppy.zernike import zernike1

    if len(modes) == 0:
        raise ValueError("zernike_basis needs at least one Noll index")
    if min(modes) < 1:
        raise ValueError(f"Noll indices start at 1, got {min(modes)}")
    coords = pupil_coordinates_m(npix, diameter_m) / (diameter_m / 2)
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    rho, theta = np.hypot(xx, yy), np.arctan2(yy, xx)
    return np.stack([zernike1(j, rho=rho, theta=theta, outside=0.0) for j in modes])


def radial_order(j: int) -> int:
    """Radial order n of Noll index j."""
    from poppy.zernike import noll_indices

    return int(noll_indices(j)[0])
