"""Obstructed and segmented pupils and segment aberrations, against geometry and POPPY."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from common.config import ConfigError
from sim.apertures import hexagon_vertices, polygon_cell_areas, segment_centres
from sim.config import load_sim_config
from sim.pupil import pupil_segments, pupil_transmission

OVERSAMPLE = 16


def _cfg(name: str = "segmented", **dotted):
    return load_sim_config(name).with_overrides(**dotted) if dotted else load_sim_config(name)


def _supersampled(vertices: np.ndarray, n: int, s: int) -> np.ndarray:
    """Cover fraction by s x s point samples per cell (cells of unit size, centre 0)."""
    from matplotlib.path import Path

    xs = (np.arange(n * s) + 0.5) / s - n / 2
    x, y = np.meshgrid(xs, xs)
    inside = Path(vertices).contains_points(np.c_[x.ravel(), y.ravel()]).reshape(x.shape)
    return inside.reshape(n, s, n, s).mean(axis=(1, 3))


@pytest.mark.parametrize("reverse", [False, True])
def test_polygon_areas_are_exact(reverse: bool) -> None:
    """The cells' areas sum to the hexagon's area (to rounding) in either vertex order, and
    agree with point sampling within its bound: s samples per edge crossing, 1/s each."""
    n, s = 24, 64
    verts = hexagon_vertices((0.37, -1.21), 7.3)
    verts = verts[::-1] if reverse else verts
    areas = polygon_cell_areas(np.arange(n + 1.0) - n / 2, verts)
    assert areas.sum() == pytest.approx(3 * math.sqrt(3) / 2 * 7.3**2, rel=1e-13)
    assert np.abs(areas - _supersampled(verts, n, s)).max() <= 2 / s
    assert areas.max() == 1.0 and areas.min() == 0.0


def test_segments_fill_the_circumscribed_circle_in_poppys_order() -> None:
    """18 segments (two rings, no centre), farthest vertex on the 6 m circle, numbered as
    POPPY numbers them (1 above the centre, then clockwise)."""
    cfg = _cfg()
    seg = pupil_segments(cfg.pupil)
    assert seg.count == 18
    radius = max(np.hypot(*hexagon_vertices(tuple(c), seg.side_px).T).max() for c in seg.centres_px)
    assert radius == pytest.approx(cfg.pupil.npix / 2, rel=1e-9)
    pitch = (seg.flat_to_flat_m + cfg.pupil.segment_gap_m) * cfg.pupil.npix / 6.0
    assert seg.centres_px[0] == pytest.approx([0.0, pitch])  # +y
    assert seg.centres_px[1][0] > 0  # then clockwise: towards +x
    assert np.unique(seg.index[seg.index >= 0]).tolist() == list(range(18))
    # every pixel's transmission is its segments' areas; the gaps are grey, not holes
    assert seg.transmission.sum() == pytest.approx(
        18 * 3 * math.sqrt(3) / 2 * seg.side_px**2, rel=1e-12
    )


def test_segment_centres_match_poppy(poppy_numpy) -> None:
    """The same centres as POPPY's `MultiHexagonAperture` for rings 1-3, with its centre."""
    import astropy.units as u

    for rings in (1, 2, 3):
        ap = poppy_numpy.MultiHexagonAperture(flattoflat=1 * u.m, gap=0.1 * u.m, rings=rings,
                                              center=True)  # fmt: skip
        ref = np.array([ap._aper_center(i)[::-1] for i in ap.segmentlist])  # (x, y)
        np.testing.assert_allclose(segment_centres(rings, 1.1, True), ref, atol=1e-12)


@pytest.fixture(scope="module")
def poppy_numpy():
    pytest.importorskip("poppy")
    from sim.poppy_numpy import import_poppy

    return import_poppy()


@pytest.mark.parametrize(
    ("name", "edges_per_pixel"), [("obstructed", 2), ("segmented", 2), ("quick", 1)]
)
def test_pupils_match_poppys_apertures(poppy_numpy, name: str, edges_per_pixel: int) -> None:
    """Exact areas against POPPY's 0/1 aperture averaged over 16 x 16 samples per pixel:
    each edge through a pixel misplaces at most 16 of its 256 samples (1/16), and no
    pixel here holds more than two edges (a gap, or a spider)."""
    from sim.poppy_ref import poppy_pupil

    cfg = _cfg(name)
    ours, ref = pupil_transmission(cfg.pupil), poppy_pupil(cfg, OVERSAMPLE)
    diff = np.abs(ours - ref)
    assert diff.max() <= edges_per_pixel / OVERSAMPLE
    edge = (ours > 0) & (ours < 1)  # only pixels that an edge crosses may differ
    assert diff[~edge & (ref != ours)].size == 0 or diff[~edge].max() <= 1 / OVERSAMPLE


def test_obstructed_pupil_area() -> None:
    """Annulus less the spiders between the circles (their ends cut along the chords)."""
    cfg = _cfg("obstructed")
    p = cfg.pupil
    px = p.npix / p.diameter_m
    r, ri, w = p.npix / 2, p.obstruction_ratio * p.npix / 2, p.spider_width_m * px
    length = math.sqrt(r**2 - w**2 / 4) - math.sqrt(ri**2 - w**2 / 4)
    expected = math.pi * (r**2 - ri**2) - p.spiders * w * length
    chord_slivers = p.spiders * (w**3 / (12 * ri) + w**3 / (12 * r))
    assert pupil_transmission(p).sum() == pytest.approx(expected, abs=chord_slivers + 1e-9)


def test_segment_opd_matches_poppys_segmented_mirror(poppy_numpy) -> None:
    """Piston, tip and tilt through POPPY's `HexSegmentedDeformableMirror` (`poppy_slopes`)
    give our map on every pixel wholly inside a segment (POPPY assigns pixels by centre)."""
    import astropy.units as u

    from sim.segments import draw_segment_coefficients, poppy_slopes, segment_basis, segment_opd

    cfg = _cfg()
    seg = pupil_segments(cfg.pupil)
    coeffs = draw_segment_coefficients(cfg, np.arange(1), seed=3, stream=0)[0]  # (S, 3) nm
    ours = segment_opd(torch.as_tensor(coeffs[None]), segment_basis(cfg))[0].numpy()
    p = cfg.pupil
    dm = poppy_numpy.HexSegmentedDeformableMirror(
        rings=p.segment_rings, flattoflat=seg.flat_to_flat_m * u.m, gap=p.segment_gap_m * u.m,
        center=p.segment_centre,
    )  # fmt: skip
    for s, (piston, tip, tilt) in zip(dm.segmentlist, poppy_slopes(cfg, coeffs), strict=True):
        dm.set_actuator(s, piston * u.m, tip * u.radian, tilt * u.radian)
    wave = poppy_numpy.Wavefront(diam=p.diameter_m * u.m, npix=p.npix, oversample=1)
    ref = np.asarray(dm.get_opd(wave)) * 1e9  # [nm]
    inside = seg.areas.max(0) == 1.0
    assert inside.sum() > 0.6 * seg.transmission.sum()  # 68 % at 64 px
    np.testing.assert_allclose(ours[inside], ref[inside], atol=1e-9 * np.abs(ref).max())


@pytest.mark.parametrize("name", ["obstructed", "segmented"])
def test_frames_match_poppy_for_each_geometry(name: str) -> None:
    """`sim check`: the optics to 1e-5 with the engine's pupil; with POPPY's own aperture,
    within the tolerance the pupils' difference allows (`sim.check.pupil_tolerance`)."""
    pytest.importorskip("poppy")
    from sim.check import run_check

    cfg = _cfg(name, wavelengths_um=[1.0])
    for source in ("engine", "poppy"):
        rows = run_check(cfg, [150.0], converged=False, pupil=source)
        assert all(r.passed for r in rows), rows
    assert rows[0].tolerance < 0.1  # the bound is informative, not vacuous


def test_generate_writes_segment_coefficients(tmp_path) -> None:
    """The file holds each sample's (S, 3) segment terms, and its OPD is the global modes'
    map plus their segment map (the RMS of the whole)."""
    import xarray as xr

    from sim.generate import plan_generation, run_generation
    from sim.segments import segment_basis, segment_opd
    from sim.zernike import zernike_basis

    cfg = _cfg(**{"aberration.segment_piston_nm": 800.0})
    out = tmp_path / "seg.h5"
    run_generation(plan_generation(cfg, out, 4, split="test", device="cpu"))
    with xr.open_dataset(out) as ds:
        seg = ds["segment_coefficients"].values.astype(np.float64)
        opd, coeffs = ds["opd"].values, ds["coefficients"].values
        rms = ds["rms"].values
    assert seg.shape == (4, 18, 3)
    assert np.abs(seg[..., 0]).max() <= 800 and np.abs(seg[..., 0]).max() > 400
    basis = zernike_basis(cfg.aberration.modes, cfg.pupil.npix, cfg.pupil.diameter_m)
    glob = np.einsum("bm,mhw->bhw", coeffs.astype(np.float64), basis)
    expected = glob + segment_opd(torch.as_tensor(seg), segment_basis(cfg)).numpy()
    mask = pupil_transmission(cfg.pupil) >= 0.5
    np.testing.assert_allclose(opd[:, mask], expected[:, mask], atol=1e-3 * np.abs(opd).max())
    centred = expected[:, mask] - expected[:, mask].mean(1, keepdims=True)
    np.testing.assert_allclose(rms, np.sqrt((centred**2).mean(1)), rtol=1e-4)


def test_segment_aberrations_need_a_segmented_pupil() -> None:
    with pytest.raises(ConfigError, match="segmented"):
        _cfg("quick", **{"aberration.segment_piston_nm": 100.0})
    with pytest.raises(ConfigError, match="circular pupil only"):
        _cfg(**{"tolerances.shift_px": 0.5})
