"""Obstructed and segmented pupils with grey edges from exact pixel areas.

Every aperture is built from two primitives that give the exact area of their overlap
with each pixel: the disk (`sim.geometry.disk_cell_areas`) and the polygon
(`polygon_cell_areas`, below). Coordinates are in pixels with the pupil's centre at 0,
x along columns, y along rows, as the circular pupil's (`sim.pupil`).

The geometry follows POPPY's, which `sim check` and the tests compare against:
- hexagonal segments as `MultiHexagonAperture`: each hexagon has vertices on the +-x axis
  (flats facing +-y), segment 0 is the centre, 1 the one above it (+y), then clockwise
  around each ring; the centre-to-centre pitch is flat-to-flat + gap;
- spiders as `SecondaryObscuration`: n supports evenly spaced, the first at
  `spider_angle_deg` from +x, each a bar of the given width from the centre outwards.

Written by hand because POPPY samples these shapes as 0/1 pixels (no grey edges for
either), and the engine needs them on its own grid, on any device, without POPPY.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from sim.geometry import disk_cell_areas

__all__ = [
    "SegmentedPupil",
    "hexagon_vertices",
    "obstructed_pupil",
    "polygon_cell_areas",
    "segment_centres",
    "segmented_pupil",
]


def _clamped_integral(t: np.ndarray, h: np.ndarray | float) -> np.ndarray:
    """Antiderivative G(t) of clamp(t, 0, h): 0, t^2 / 2, then h t - h^2 / 2."""
    return np.where(t <= 0, 0.0, np.where(t >= h, h * t - 0.5 * h * h, 0.5 * t * t))


ROUNDING_AREA = 1e-9
"""Cell fractions below this are rounding, not area (the sums leave ~1e-14)."""


def _cell_fractions(area: np.ndarray) -> np.ndarray:
    """Summed cell areas as fractions in [0, 1]: rounding-only cells (<= `ROUNDING_AREA`)
    dark, so that "transmission > 0" means lit."""
    return np.where(area > ROUNDING_AREA, np.minimum(area, 1.0), 0.0)


def polygon_cell_areas(edges: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Fraction (M, M) of each square cell covered by a simple polygon, exact up to rounding.

    Args:
        edges: the M + 1 cell edges along each axis (uniform, same for x and y).
        vertices: (V, 2) polygon vertices (x, y) in the edges' unit, in either order.

    The area of polygon and cell is -closed integral of clamp(y - y_lo, 0, h) dx over the
    polygon's boundary (counter-clockwise), for x within the cell's columns: summed over
    the polygon's straight edges in closed form (Green's theorem on the clipped strip).
    """
    v = np.asarray(vertices, dtype=np.float64)
    x1, y1 = v[:, 0], v[:, 1]
    x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
    signed = 0.5 * np.sum(x1 * y2 - x2 * y1)  # > 0 counter-clockwise
    orient = 1.0 if signed > 0 else -1.0
    e = np.asarray(edges, dtype=np.float64)
    xa, xb = e[:-1], e[1:]  # cell columns (M,)
    ya, h = e[:-1], e[1] - e[0]  # cell rows (M,) and height
    sloped = x1 != x2
    x1, y1, x2, y2 = x1[sloped], y1[sloped], x2[sloped], y2[sloped]
    slope = (y2 - y1) / (x2 - x1)
    lo, hi = np.minimum(x1, x2), np.maximum(x1, x2)
    # each edge over each column: its x-interval [u, w] (empty: u >= w)
    u = np.maximum(lo[:, None], xa[None, :])  # (E, M)
    w = np.minimum(hi[:, None], xb[None, :])
    present = w > u
    u, w = np.where(present, u, 0.0), np.where(present, w, 0.0)
    yu = y1[:, None] + slope[:, None] * (u - x1[:, None])  # (E, M) edge height at u and w
    yw = y1[:, None] + slope[:, None] * (w - x1[:, None])
    tu = yu[:, :, None] - ya[None, None, :]  # (E, M columns, M rows)
    tw = yw[:, :, None] - ya[None, None, :]
    flat = np.abs(slope) < 1e-12
    m = np.where(flat, 1.0, slope)[:, None, None]
    by_slope = (_clamped_integral(tw, h) - _clamped_integral(tu, h)) / m
    by_height = np.clip(tu, 0.0, h) * (w - u)[:, :, None]
    integral = np.where(flat[:, None, None], by_height, by_slope) * present[:, :, None]
    direction = np.sign(x2 - x1)[:, None, None]  # moving +x: the lower boundary
    area = -orient * np.sum(direction * integral, axis=0) / h**2  # (M columns, M rows)
    return _cell_fractions(area.T)  # (rows, columns); ~1e-14 of rounding elsewhere


def hexagon_vertices(centre: tuple[float, float], side: float) -> np.ndarray:
    """(6, 2) vertices (x, y) of a regular hexagon of circumradius `side`, vertices on +-x."""
    angles = np.arange(6) * np.pi / 3
    return np.stack((centre[0] + side * np.cos(angles), centre[1] + side * np.sin(angles)), -1)


def segment_centres(rings: int, pitch: float, centre: bool) -> np.ndarray:
    """(S, 2) centres (x, y) of a hexagonal array in POPPY's order: centre, then ring by
    ring, each starting at +y and going clockwise."""
    out = []
    for ring in range(rings + 1):
        if ring == 0:
            if centre:
                out.append((0.0, 0.0))
            continue
        ring_points = []
        for q in range(-ring, ring + 1):  # axial coordinates of the hex grid at distance ring
            for r in range(max(-ring, -q - ring), min(ring, -q + ring) + 1):
                if max(abs(q), abs(r), abs(q + r)) != ring:
                    continue
                # columns of hexagons with flats facing +-y: x steps of 1.5 side
                x = pitch * math.sqrt(3) / 2 * q
                y = pitch * (r + q / 2)
                ring_points.append((x, y))
        # clockwise from +y: increasing atan2(x, y) in [0, 2 pi)
        ring_points.sort(key=lambda p: math.atan2(p[0], p[1]) % (2 * math.pi) - 1e-9)
        out.extend(ring_points)
    return np.asarray(out, dtype=np.float64)


class SegmentedPupil:
    """A hexagonal segmented pupil on an (npix, npix) grid.

    transmission (N, N) exact pixel areas; areas (S, N, N) each segment's; index (N, N)
    int: the segment covering most of each pixel (-1 where none); centres_px (S, 2) (x, y)
    and side_px, flat_to_flat_m, gap_m: the geometry.
    """

    def __init__(self, npix: int, diameter_m: float, rings: int, gap_m: float, centre: bool):
        if rings < 1:
            raise ValueError(f"a segmented pupil needs rings >= 1, got {rings}")
        self.npix, self.diameter_m, self.rings, self.gap_m = npix, diameter_m, rings, gap_m
        unit = segment_centres(rings, 1.0, centre)  # centres for a pitch of 1
        self.flat_to_flat_m = _flat_to_flat_for_diameter(unit, diameter_m, gap_m)
        px = npix / diameter_m  # pixels per metre
        pitch_px = (self.flat_to_flat_m + gap_m) * px
        self.side_px = self.flat_to_flat_m / math.sqrt(3) * px
        self.centres_px = unit * pitch_px
        edges = np.arange(npix + 1, dtype=np.float64) - npix / 2
        self.areas = np.stack(
            [polygon_cell_areas(edges, hexagon_vertices(c, self.side_px)) for c in self.centres_px]
        )
        self.transmission = np.clip(self.areas.sum(0), 0.0, 1.0)
        self.index = np.where(self.areas.max(0) > 0, self.areas.argmax(0), -1)

    @property
    def count(self) -> int:
        """Number of segments."""
        return len(self.centres_px)


def _flat_to_flat_m(unit: np.ndarray, f: float, gap: float) -> float:
    """Circumscribed radius [m] of the array for flat-to-flat f and gap."""
    verts = np.concatenate([hexagon_vertices(tuple(c * (f + gap)), f / math.sqrt(3)) for c in unit])
    return float(np.hypot(verts[:, 0], verts[:, 1]).max())


def _flat_to_flat_for_diameter(unit: np.ndarray, diameter_m: float, gap_m: float) -> float:
    """The flat-to-flat [m] whose array is circumscribed by `diameter_m` (bisection)."""
    lo, hi = 0.0, diameter_m
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _flat_to_flat_m(unit, mid, gap_m) < diameter_m / 2 else (lo, mid)
    if lo <= 0:
        raise ValueError(f"gaps of {gap_m} m leave no room for segments in {diameter_m} m")
    return lo


def segmented_pupil(npix: int, diameter_m: float, rings: int, gap_m: float, centre: bool):
    """`SegmentedPupil` (cached per geometry: building one takes ~10-100 ms)."""
    key = (npix, diameter_m, rings, gap_m, centre)
    if key not in _SEGMENTED_CACHE:
        _SEGMENTED_CACHE[key] = SegmentedPupil(*key)
    return _SEGMENTED_CACHE[key]


_SEGMENTED_CACHE: dict[tuple, SegmentedPupil] = {}


def obstructed_pupil(
    npix: int,
    diameter_m: float,
    obstruction_ratio: float,
    spiders: int,
    spider_width_m: float,
    spider_angle_deg: float,
) -> np.ndarray:
    """Transmission (N, N) of a circular pupil with a central obstruction and spiders.

    The disks are exact pixel areas; each spider is the bar between the obstruction and the
    rim, its two ends cut straight where its corners meet the circles: the arcs' chords
    differ from them by at most w^3 / (12 r) px^2 per end (w the width and r the radius in
    px: 2e-3 px^2 for a 0.5 px spider on a 5 px obstruction). Spiders overlap only at the
    centre, inside the obstruction, which the cut excludes when it is wider than them.
    """
    px = npix / diameter_m
    radius, inner = npix / 2.0, obstruction_ratio * npix / 2.0
    half_w = spider_width_m * px / 2
    if spiders and inner < half_w * 1.5:
        raise ValueError(
            f"spiders of {spider_width_m} m need an obstruction wider than them "
            f"(ratio >= {3 * spider_width_m / diameter_m:.3f}), got {obstruction_ratio}"
        )
    edges = torch.arange(npix + 1, dtype=torch.float64) - npix / 2
    zero = torch.zeros((), dtype=torch.float64)
    disk = disk_cell_areas(edges, (zero, zero), torch.tensor(radius, dtype=torch.float64))
    hole = disk_cell_areas(edges, (zero, zero), torch.tensor(inner, dtype=torch.float64))
    out = (disk - hole).numpy()
    start = math.sqrt(max(inner**2 - half_w**2, 0.0))
    stop = math.sqrt(radius**2 - half_w**2)
    e = edges.numpy()
    for k in range(spiders):
        a = 2 * math.pi * k / spiders + math.radians(spider_angle_deg)
        along, across = np.array([math.cos(a), math.sin(a)]), np.array([-math.sin(a), math.cos(a)])
        ends = ((start, -half_w), (stop, -half_w), (stop, half_w), (start, half_w))
        corners = [along * t + across * s for t, s in ends]
        out = out - polygon_cell_areas(e, np.asarray(corners))
    return _cell_fractions(out)
