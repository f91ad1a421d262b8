"""Noll-indexed Zernike basis on the sampled pupil, in POPPY's convention.

Modes follow Noll (1976): index j -> (n, m), radial polynomial R_n^|m|, normalisation
sqrt(n + 1) (m = 0) or sqrt(2 (n + 1)) with cos(m theta) for even j and sin(|m| theta)
for odd j: unit RMS over the unit disk. They are evaluated at the pixel centres with
rho = r / (D/2), the radius convention of `poppy.ZernikeWFE` and `CircularAperture`;
zero outside rho = 1. This is `poppy.zernike.zernike1`, written out so that the engine
runs without POPPY (tests/test_sim_aberrations.py compares the two).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from sim.pupil import pupil_coordinates_m

__all__ = ["noll_indices", "radial_order", "zernike_basis", "zernike_coefficients"]

ArrayLike = Any  # numpy arrays, or torch tensors (read through .detach().cpu().numpy())


def _numpy(x: ArrayLike) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def zernike_basis(
    modes: Sequence[int], npix: int, diameter_m: float = 1.0, clip: bool = True
) -> np.ndarray:
    """Zernike modes (M, npix, npix), float64, unit RMS over the pupil, 0 outside it
    (unless `clip` is False).

    modes: Noll indices j (1 = piston). clip: False: the polynomials go on outside the
    circle (for pixels that a non-circular pupil lights there).
    """
    if len(modes) == 0:
        raise ValueError("zernike_basis needs at least one Noll index")
    if min(modes) < 1:
        raise ValueError(f"Noll indices start at 1, got {min(modes)}")
    coords = pupil_coordinates_m(npix, diameter_m) / (diameter_m / 2)
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    rho, theta = np.hypot(xx, yy), np.arctan2(yy, xx)
    return np.stack([_zernike(j, rho, theta, clip) for j in modes])


def noll_indices(j: int) -> tuple[int, int]:
    """Radial order n and signed azimuthal order m of Noll index j (m < 0: a sine mode)."""
    if j < 1:
        raise ValueError(f"Noll indices start at 1, got {j}")
    n = 0
    while (n + 1) * (n + 2) // 2 < j:
        n += 1
    rank = j - n * (n + 1) // 2 - 1  # position in row n, 0-based
    # |m| runs 0 or 1, then pairs of equal |m| upward: n even -> 0, 2, 2, 4, 4, ...;
    # n odd -> 1, 1, 3, 3, ...
    m_abs = 2 * ((rank + 1) // 2) if n % 2 == 0 else 2 * (rank // 2) + 1
    return n, (-m_abs if j % 2 else m_abs) if m_abs else 0


def radial_order(j: int) -> int:
    """Radial order n of Noll index j."""
    return noll_indices(j)[0]


def _radial(n: int, m_abs: int, rho: np.ndarray) -> np.ndarray:
    """Zernike radial polynomial R_n^m(rho)."""
    out = np.zeros_like(rho)
    for k in range((n - m_abs) // 2 + 1):
        coef = (-1) ** k * math.factorial(n - k)
        coef /= (
            math.factorial(k)
            * math.factorial((n + m_abs) // 2 - k)
            * math.factorial((n - m_abs) // 2 - k)
        )
        out += coef * rho ** (n - 2 * k)
    return out


def _zernike(j: int, rho: np.ndarray, theta: np.ndarray, clip: bool = True) -> np.ndarray:
    """Noll-normalised mode j at (rho, theta); 0 outside rho = 1 when `clip`."""
    n, m = noll_indices(j)
    inside = rho <= 1
    if m == 0:
        z = np.sqrt(n + 1) * _radial(n, 0, rho)
    else:
        azimuth = np.cos(m * theta) if m > 0 else np.sin(-m * theta)
        z = np.sqrt(2 * (n + 1)) * _radial(n, abs(m), rho) * azimuth
    return np.where(inside, z, 0.0) if clip else z


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
