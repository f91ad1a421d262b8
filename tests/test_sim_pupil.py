"""The NumPy grey-edged pupil against POPPY's `CircularAperture(gray_pixel=True)`."""

from __future__ import annotations

import ast
import math

import numpy as np
import pytest

from sim.pupil import circular_pupil

NPIX = [16, 32, 63, 64, 128, 256]
DIAMETERS_M = [6.0, 1.0]
EPS = np.finfo(np.float64).eps

# Tolerances, in units of eps * R^2 with R = npix / 2 the radius in pixels.
# Both sides compute the exact pixel/disk overlap area (POPPY's `geometry.pixwt` is an
# analytic area, not a sub-sampling), so only rounding separates them. Every term either
# side adds is bounded by R^2 px^2 (triangles from the centre, sectors R^2 * dtheta with
# dtheta <= pi/2), hence absolute errors scale as eps * R^2. Counting 0.5 ulp per
# arithmetic operation and 4 ulp per atan/atan2 (NumPy's SIMD builds included):
# - ours: 4 quadrant areas, each 2 triangles + 1 sector, then the mean with the transposed
#   pixel (one more rounding of a value <= 1)  -> <= 30 eps R^2 of the exact area;
# - POPPY's pixwt: 4 one-sided pieces, each <= 2 arc sectors + 1 chord -> <= 53 eps R^2;
# - POPPY's coordinates x / pixelscale and radius / pixelscale (relative error 2 eps) move
#   the pixel edges and the radius by <= 2 eps R, i.e. <= 16 eps R (<= 2 eps R^2 for
#   npix >= 16) of area.
# Sum 85, rounded up: |ours - POPPY| <= 96 eps R^2. Measured: <= 0.97 eps R^2 (2.8e-12 at
# npix = 256), each side within 0.76 eps R^2 of a 40-digit mpmath evaluation.
OURS_TOL = 32.0  # ours vs the exact area
POPPY_TOL = 96.0  # ours vs POPPY


def _radius_px(npix: int) -> float:
    return npix / 2.0


def _poppy_circular_pupil(poppy, npix: int, diameter_m: float) -> np.ndarray:
    """The former `sim.pupil.circular_pupil`: POPPY's grey-pixel circle on a D-wide array."""
    import astropy.units as u

    wave = poppy.Wavefront(diam=diameter_m * u.m, npix=npix, oversample=1)
    aperture = poppy.CircularAperture(radius=diameter_m / 2 * u.m, gray_pixel=True)
    return np.asarray(aperture.get_transmission(wave), dtype=np.float64)


@pytest.fixture(scope="module")
def poppy_numpy():
    """POPPY forced onto NumPy (no CuPy, no numexpr): `sim.poppy_ref.import_poppy`."""
    pytest.importorskip("poppy")
    from sim.poppy_numpy import import_poppy

    return import_poppy()


@pytest.mark.parametrize("diameter_m", DIAMETERS_M)
@pytest.mark.parametrize("npix", NPIX)
def test_matches_poppy_gray_pixel(poppy_numpy, npix: int, diameter_m: float) -> None:
    """Same grey edge as POPPY up to rounding (bound derived above)."""
    ours = circular_pupil(npix, diameter_m)
    ref = _poppy_circular_pupil(poppy_numpy, npix, diameter_m)
    diff = np.abs(ours - ref).max()
    assert diff <= POPPY_TOL * EPS * _radius_px(npix) ** 2, (npix, diameter_m, diff)


@pytest.mark.parametrize("npix", NPIX)
def test_shape_total_interior_and_corners(npix: int) -> None:
    """float64 (npix, npix); sum pi R^2; wholly-inside pixels exactly 1, outside exactly 0."""
    pupil = circular_pupil(npix, 6.0)
    assert pupil.shape == (npix, npix) and pupil.dtype == np.float64
    radius = _radius_px(npix)

    # The disk lies inside the array, so the areas sum to pi R^2. A quarter circle is
    # monotone and crosses at most R vertical and R horizontal grid lines, so at most
    # 8 R + 4 pixels are grey, each within OURS_TOL eps R^2; fsum and pi * R^2 add
    # <= 2 eps pi R^2.
    grey = (pupil > 0) & (pupil < 1)
    assert grey.sum() <= 8 * radius + 4
    total_tol = ((8 * radius + 4) * OURS_TOL + 2 * math.pi) * EPS * radius**2
    assert abs(math.fsum(pupil.ravel()) - math.pi * radius**2) <= total_tol

    # Pixel edges are k - R; a pixel is wholly inside when its farthest corner is
    # within R, wholly outside when its nearest point is at least R away.
    edges = np.arange(npix + 1) - radius
    lo, hi = edges[:-1], edges[1:]
    far = np.maximum(np.abs(lo), np.abs(hi))
    near = np.where((lo < 0) & (hi > 0), 0.0, np.minimum(np.abs(lo), np.abs(hi)))
    inside = np.hypot(far[:, None], far[None, :]) < radius - 1e-9
    outside = np.hypot(near[:, None], near[None, :]) > radius + 1e-9
    assert inside.any() and outside.any()
    assert np.all(pupil[inside] == 1.0)
    assert np.all(pupil[outside] == 0.0)
    assert np.all(pupil[[0, 0, -1, -1], [0, -1, 0, -1]] == 0.0)
    assert np.all((pupil >= 0) & (pupil <= 1))


@pytest.mark.parametrize("npix", [16, 63])
def test_symmetry_and_diameter_independence(npix: int) -> None:
    """8-fold symmetric bit for bit, and the same for any diameter."""
    pupil = circular_pupil(npix, 6.0)
    assert np.array_equal(pupil, pupil[::-1]) and np.array_equal(pupil, pupil[:, ::-1])
    assert np.array_equal(pupil, pupil.T)
    assert np.array_equal(pupil, circular_pupil(npix, 1.0))


def test_tiny_grids_exact() -> None:
    """npix = 1 and 2: the disk of radius 1/2 or 1 gives pi / 4 in every pixel."""
    assert circular_pupil(1, 6.0) == pytest.approx(np.full((1, 1), math.pi / 4), abs=4 * EPS)
    assert circular_pupil(2, 6.0) == pytest.approx(np.full((2, 2), math.pi / 4), abs=4 * EPS)


@pytest.mark.parametrize(("npix", "diameter_m"), [(0, 6.0), (16, 0.0), (16, -1.0)])
def test_rejects_bad_arguments(npix: int, diameter_m: float) -> None:
    with pytest.raises(ValueError):
        circular_pupil(npix, diameter_m)


def test_pupil_module_does_not_import_poppy() -> None:
    """`sim.pupil` is pure NumPy: it imports neither poppy nor astropy."""
    import sim.pupil

    with open(sim.pupil.__file__, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported.isdisjoint({"poppy", "astropy"}), imported


def test_exact_disk_areas_match_the_pupil_and_differentiate() -> None:
    """`sim.geometry.disk_cell_areas` is the pupil at the nominal system (to 1e-12) and
    the dot's footprint; its derivative in the radius is the circumference (total area
    pi r^2), and gradcheck passes in the centre and radius."""
    import torch

    from sim.geometry import disk_cell_areas
    from sim.system import NOMINAL_SYSTEM, system_pupil

    for n in (16, 64):
        nominal = system_pupil(n, torch.tensor(NOMINAL_SYSTEM, dtype=torch.float64))
        assert np.abs(nominal.numpy() - circular_pupil(n, 6.0)).max() < 1e-12
    edges = (torch.arange(37, dtype=torch.float64) - 18) / 32  # a focal box [lambda0/D]
    radius = torch.tensor(0.53, dtype=torch.float64, requires_grad=True)
    zero = torch.zeros((), dtype=torch.float64)
    area = disk_cell_areas(edges, (zero, zero), radius).sum() / 32**2
    assert float(area) == pytest.approx(np.pi * 0.53**2, rel=1e-12)
    (grad,) = torch.autograd.grad(area, radius)
    assert float(grad) == pytest.approx(2 * np.pi * 0.53, rel=1e-12)
    args = tuple(torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (0.01, -0.02))
    assert torch.autograd.gradcheck(lambda cx, cy: disk_cell_areas(edges, (cx, cy), radius), args)
