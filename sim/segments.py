"""Segment aberrations of a segmented pupil: piston, tip and tilt per segment.

Segment s's OPD on its own pixels (`SegmentedPupil.index == s`) is

    p_s + t_s X_s + u_s Y_s,   X_s = (x - x_s) / sigma, Y_s = (y - y_s) / sigma,

with (x_s, y_s) the segment's centre, p_s its piston [nm OPD] and t_s, u_s its tip and
tilt [nm RMS over the segment]: sigma = side sqrt(5 / 24) is the RMS of x over a regular
hexagon of circumradius `side`, so X_s and Y_s have unit RMS over the continuous segment.
POPPY's `HexSegmentedDeformableMirror` takes the same OPD as piston [m] and slopes
[rad] = t_s 1e-9 / sigma [m] (`poppy_slopes`).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from data.schema import SEGMENT_TERMS
from sim.config import SimConfig
from sim.pupil import pupil_segments

__all__ = [
    "SEGMENT_STREAM",
    "draw_segment_coefficients",
    "poppy_slopes",
    "segment_basis",
    "segment_opd",
]

SEGMENT_STREAM = 7
"""The fourth element of a sample's generator key for its segment aberrations."""
HEX_RMS = math.sqrt(5 / 24)
"""RMS of x over a regular hexagon of unit circumradius (about its centre)."""


def segment_basis(cfg: SimConfig, npix: int | None = None) -> torch.Tensor:
    """(S, 3, N, N) float64: each segment's piston, tip and tilt maps (zero elsewhere)."""
    seg = pupil_segments(cfg.pupil, npix)
    n = seg.npix
    coords = np.arange(n, dtype=np.float64) - (n - 1) / 2  # pixel centres [px]
    x, y = np.meshgrid(coords, coords)  # x: columns, y: rows
    sigma = seg.side_px * HEX_RMS
    out = np.zeros((seg.count, len(SEGMENT_TERMS), n, n))
    for s, (cx, cy) in enumerate(seg.centres_px):
        on = seg.index == s
        out[s, 0] = on
        out[s, 1] = on * (x - cx) / sigma
        out[s, 2] = on * (y - cy) / sigma
    return torch.as_tensor(out)


def draw_segment_coefficients(cfg: SimConfig, indices: np.ndarray, seed: int, stream: int):
    """(B, S, 3) float64 [nm]: pistons uniform in +- `segment_piston_nm`, tip and tilt in
    +- `segment_tiptilt_nm`, from each sample's own generator."""
    count = pupil_segments(cfg.pupil).count
    ab = cfg.aberration
    half = np.array([ab.segment_piston_nm, ab.segment_tiptilt_nm, ab.segment_tiptilt_nm])
    out = np.empty((len(indices), count, len(SEGMENT_TERMS)))
    for row, i in enumerate(np.asarray(indices, dtype=np.int64)):
        rng = np.random.default_rng([seed, stream, int(i), SEGMENT_STREAM])
        out[row] = rng.uniform(-1, 1, (count, len(SEGMENT_TERMS))) * half
    return out


def segment_opd(coefficients: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """OPD maps (B, N, N) [nm] of coefficients (B, S, 3) on `segment_basis` (S, 3, N, N)."""
    return torch.einsum("bst,sthw->bhw", coefficients.to(basis.dtype), basis)


def poppy_slopes(cfg: SimConfig, coefficients: np.ndarray) -> np.ndarray:
    """(S, 3) POPPY's `set_actuator` values: piston [m], tip and tilt slopes [rad] (x, y)."""
    seg = pupil_segments(cfg.pupil)
    sigma_m = seg.side_px * cfg.pupil.diameter_m / seg.npix * HEX_RMS
    c = np.asarray(coefficients, dtype=np.float64) * 1e-9
    return np.concatenate([c[:, :1], c[:, 1:] / sigma_m], axis=1)
