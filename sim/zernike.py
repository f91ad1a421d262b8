"""Noll-indexed Zernike basis on the sampled pupil, in POPPY's convention.

Modes follow `poppy.zernike.zernike1` (Noll 1976 normalisation: unit RMS over the
unit disk) evaluated at the pixel centres with rho = r / (D/2), the radius
convention of `poppy.ZernikeWFE` and `CircularAperture`; zero outside rho = 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from sim.pupil import pupil_coordinates_m

__all__ = ["radial_order", "zernike_basis", "zernike_coefficients"]

ArrayLike = Any  # numpy arrays, or torch tensors (read through .detach().cpu().numpy())


def _numpy(x: ArrayLike) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


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


def zernike_coefficients(opd: ArrayLike, basis: ArrayLike, mask: np.ndarray) -> np.ndarray:
    """Least-squares Zernike coefficients [nm RMS per mode] of OPD maps over the pupil.

    Args:
        opd: (B, H, W) or (H, W) [nm]. Piston (the mean inside the pupil) is removed first.
        basis: (M, H, W) unit-RMS modes, e.g. `ZWFSModel.basis()` (Noll j = 2..36).
        mask: (H, W) bool pupil.

    Returns:
        (B, M) or (M,) float64 coefficients c with opd ~ sum_j c_j Z_j inside the pupil.
    """
    o, z = _numpy(opd), _numpy(basis)
    m = np.asarray(mask, dtype=bool)
    single = o.ndim == 2
    o = o[None] if single else o
    if o.shape[-2:] != z.shape[-2:] or m.shape != z.shape[-2:]:
        raise ValueError(
            f"OPD {o.shape[-2:]}, basis {z.shape[-2:]} and mask {m.shape} differ in size"
        )
    values = o[:, m].astype(np.float64)  # (B, H, W) -> (B, P)
    values -= values.mean(axis=1, keepdims=True)
    design = z[:, m].astype(np.float64).T  # (M, H, W) -> (P, M)
    coeffs, *_ = np.linalg.lstsq(design, values.T, rcond=None)  # (M, B)
    return coeffs.T[0] if single else coeffs.T
