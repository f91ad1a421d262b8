"""The engine's own Zernike modes equal POPPY's `zernike1` (Noll 1976), mode by mode."""

from __future__ import annotations

import numpy as np
import pytest

from sim.pupil import pupil_coordinates_m
from sim.zernike import noll_indices, radial_order, zernike_basis


@pytest.fixture(scope="module")
def poppy_zernike():
    from sim.poppy_numpy import import_poppy

    return import_poppy().zernike


def test_noll_indices_match_poppy(poppy_zernike) -> None:
    for j in range(1, 232):  # radial orders 0-20
        assert noll_indices(j) == tuple(int(v) for v in poppy_zernike.noll_indices(j)), j
    assert radial_order(36) == 7 and noll_indices(4) == (2, 0) and noll_indices(5) == (2, -2)
    with pytest.raises(ValueError, match="start at 1"):
        noll_indices(0)


@pytest.mark.parametrize("npix", [16, 63, 128])
def test_modes_match_poppy(poppy_zernike, npix: int) -> None:
    """Modes 1-66 (orders 0-10) to 1e-12: both sum the same polynomial terms, whose
    coefficients stay below 1e4 in size at these orders, times float64 epsilon."""
    coords = pupil_coordinates_m(npix, 6.0) / 3.0
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    rho, theta = np.hypot(xx, yy), np.arctan2(yy, xx)
    ref = np.stack(
        [poppy_zernike.zernike1(j, rho=rho, theta=theta, outside=0.0) for j in range(1, 67)]
    )
    np.testing.assert_allclose(zernike_basis(range(1, 67), npix, 6.0), ref, rtol=0, atol=1e-12)
