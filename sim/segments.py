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
from sim.zernike import zernike_basis

__all__ = [
    "SEGMENT_STREAM",
    "draw_segment_coefficients",
    "poppy_slopes",
    "segment_basis",
    "segment_fit_basis",
    "segment_means_weights",
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
    +- `segment_tiptilt_nm`, all three times a factor uniform in [0, 1] per sample when
    `segment_scale` is uniform; from each sample's own generator."""
    count = pupil_segments(cfg.pupil).count
    ab = cfg.aberration
    half = np.array([ab.segment_piston_nm, ab.segment_tiptilt_nm, ab.segment_tiptilt_nm])
    out = np.empty((len(indices), count, len(SEGMENT_TERMS)))
    for row, i in enumerate(np.asarray(indices, dtype=np.int64)):
        rng = np.random.default_rng([seed, stream, int(i), SEGMENT_STREAM])
        out[row] = rng.uniform(-1, 1, (count, len(SEGMENT_TERMS))) * half
        if ab.segment_scale == "uniform":
            out[row] *= rng.uniform()
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


def segment_fit_basis(cfg: SimConfig, noll_max: int) -> tuple[torch.Tensor, list[str]]:
    """The refinement's modes (J, N, N) float64 on a segmented pupil, and their labels.

    The piston of every segment but the first (the ZWFS cannot see a piston common to
    all: the fit holds the first at 0), tip and tilt of every segment
    (`segment_basis`), then Noll 2..`noll_max` made orthogonal to those over the lit
    pixels (unweighted) and unit RMS there: a global mode keeps only what the segments
    cannot hold (Noll 2 and 3 drop out, being segment pistons, tips and tilts). The
    coefficients are in nm RMS of each column's own support (a segment's, or the pupil).
    """
    seg_modes = segment_basis(cfg)  # (S, 3, N, N)
    count = seg_modes.shape[0]
    columns = [seg_modes[1:, 0], seg_modes[:, 1], seg_modes[:, 2]]
    labels = [f"piston {s}" for s in range(1, count)]
    labels += [f"tip {s}" for s in range(count)] + [f"tilt {s}" for s in range(count)]
    lit = torch.as_tensor(pupil_segments(cfg.pupil).transmission > 0)
    segment_part = torch.cat(columns)  # (3S - 1, N, N)
    # the span of every segment term, the first piston included: global modes made
    # orthogonal to it cannot bring back the common piston that the fit leaves out
    q, _ = torch.linalg.qr(seg_modes.flatten(0, 1)[:, lit].T)
    npix, modes = cfg.pupil.npix, range(2, int(noll_max) + 1)
    z = torch.as_tensor(zernike_basis(list(modes), npix, cfg.pupil.diameter_m, clip=False))[
        :, lit
    ].T
    global_cols = []
    for j, col in zip(modes, z.T, strict=True):
        rest = col - q @ (q.T @ col)
        for done in global_cols:  # Gram-Schmidt among the global modes too
            rest = rest - done * (done @ rest) / (done @ done)
        rms = float(rest.square().mean().sqrt())
        if rms < 1e-9 * float(col.square().mean().sqrt()):
            continue  # the segments hold this mode
        global_cols.append(rest / rms)
        labels.append(f"Noll {j}")
    out = torch.zeros(len(labels), npix, npix, dtype=torch.float64)
    out[: len(segment_part)] = segment_part
    if global_cols:
        out[len(segment_part) :, lit] = torch.stack(global_cols)
    return out, labels


def segment_means_weights(cfg: SimConfig) -> np.ndarray:
    """(S, N, N) float64: each segment's pixel weights (their areas), summing to 1."""
    seg = pupil_segments(cfg.pupil)
    weights = np.stack([seg.transmission * (seg.index == s) for s in range(seg.count)])
    return weights / weights.sum(axis=(1, 2), keepdims=True)
