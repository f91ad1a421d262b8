"""Pupil-plane grid and the grey-edged pupils (exact pixel areas): the circle here, the
obstructed and segmented ones in `sim.apertures`; `pupil_transmission` picks by config."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sim.apertures import SegmentedPupil
    from sim.config import PupilConfig

__all__ = ["circular_pupil", "pupil_coordinates_m", "pupil_segments", "pupil_transmission"]


def pupil_transmission(pupil: PupilConfig, npix: int | None = None) -> np.ndarray:
    """Transmission (N, N) of the configured pupil geometry on `npix` (default the
    config's) pixels across its diameter."""
    n = pupil.npix if npix is None else npix
    if pupil.geometry == "circular":
        return circular_pupil(n, pupil.diameter_m)
    if pupil.geometry == "obstructed":
        from sim.apertures import obstructed_pupil

        return obstructed_pupil(
            n, pupil.diameter_m, pupil.obstruction_ratio, pupil.spiders,
            pupil.spider_width_m, pupil.spider_angle_deg,
        )  # fmt: skip
    return pupil_segments(pupil, n).transmission


def pupil_segments(pupil: PupilConfig, npix: int | None = None) -> SegmentedPupil:
    """The segments of a segmented pupil (`sim.apertures.SegmentedPupil`)."""
    if pupil.geometry != "segmented":
        raise ValueError(f"pupil.geometry is {pupil.geometry}, not segmented")
    from sim.apertures import segmented_pupil

    n = pupil.npix if npix is None else npix
    return segmented_pupil(
        n, pupil.diameter_m, pupil.segment_rings, pupil.segment_gap_m, pupil.segment_centre
    )


def pupil_coordinates_m(npix: int, diameter_m: float) -> np.ndarray:
    """Pixel-centre coordinates [m] along one axis; the array width equals the diameter."""
    pitch = diameter_m / npix
    return (np.arange(npix) - (npix - 1) / 2.0) * pitch


def circular_pupil(npix: int, diameter_m: float) -> np.ndarray:
    """Transmission (npix, npix) of a circular pupil with grey (area-weighted) edge pixels.

    Each pixel holds the exact area of its overlap with the disk, as POPPY's
    `CircularAperture(gray_pixel=True)` does (its `geometry.pixwt`) on a `Wavefront`
    whose array width is the pupil diameter: disk centred on the array centre
    ((npix - 1) / 2 for even and odd npix), radius npix / 2 pixels. Pixels wholly
    inside are exactly 1, wholly outside exactly 0; the map is 8-fold symmetric bit
    for bit. In pixel units the result does not depend on `diameter_m`.
    """
    if npix < 1 or diameter_m <= 0:
        raise ValueError(f"need npix >= 1 and diameter_m > 0, got {npix}, {diameter_m}")
    radius_px = npix / 2.0
    first = npix // 2  # the quadrant x, y >= 0 (for odd npix with the central row/column)
    edges_px = np.arange(first, npix + 1) - radius_px  # pixel edges; exact in float64
    quadrant = _quadrant_area(edges_px[None, :], edges_px[:, None], radius_px)
    area = quadrant[1:, 1:] - quadrant[1:, :-1] - quadrant[:-1, 1:] + quadrant[:-1, :-1]
    area = np.clip(0.5 * (area + area.T), 0.0, 1.0)

    # Nearest and farthest squared distance of each pixel from the centre: exact sums of
    # squared half-integers, so the wholly-inside / wholly-outside tests are exact.
    lo, hi = edges_px[:-1], edges_px[1:]
    far2 = np.maximum(lo**2, hi**2)
    near2 = np.where((lo < 0) & (hi > 0), 0.0, np.minimum(lo**2, hi**2))
    r2 = radius_px**2
    area[far2[:, None] + far2[None, :] <= r2] = 1.0
    area[near2[:, None] + near2[None, :] >= r2] = 0.0

    half = np.concatenate([area[:, ::-1][:, :first], area], axis=1)  # mirror in x
    return np.concatenate([half[::-1][:first], half], axis=0)  # mirror in y


def _quadrant_area(x: np.ndarray, y: np.ndarray, radius: float) -> np.ndarray:
    """Signed area of the disk (centre 0, `radius`) within [0, x] x [0, y] (odd in x and y)."""
    ax = np.minimum(np.abs(x), radius)
    ay = np.minimum(np.abs(y), radius)
    r2 = radius**2
    x_top = np.sqrt(np.maximum(r2 - ay**2, 0.0))  # where the circle meets the line y = ay
    y_side = np.sqrt(np.maximum(r2 - ax**2, 0.0))  # ... and the line x = ax
    # Corner outside the disk: two triangles from the centre plus the sector between them.
    cut = 0.5 * (x_top * ay + ax * y_side + r2 * (np.arctan2(ay, x_top) - np.arctan2(y_side, ax)))
    area = np.where(ax**2 + ay**2 <= r2, ax * ay, cut)
    return np.sign(x) * np.sign(y) * area
