"""Exact areas of a disk over the cells of a grid, differentiable in its centre and radius.

One function serves every round aperture of the system: the pupil (nominal, or shifted
and scaled by a calibration) and the focal dot's footprint (at the nominal or a
calibrated diameter). Written in torch because calibration needs the derivatives in the
disk's centre and radius; POPPY's `geometry.pixwt` gives the same areas without them.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["disk_cell_areas", "quadrant_area"]


def quadrant_area(x: torch.Tensor, y: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Signed area of the disk (centre 0, `radius`) within [0, x] x [0, y] (odd in x and y).

    Works for NumPy arrays and torch tensors alike (float64 throughout); C1 in `radius`,
    so gradients are exact where the circle crosses a cell.
    """
    xp = torch if isinstance(x, torch.Tensor) else np
    ax = xp.minimum(xp.abs(x), radius)
    ay = xp.minimum(xp.abs(y), radius)
    r2 = radius**2
    # where the circle meets the line y = ay, and the line x = ax (a floor of 1e-300
    # under the square roots keeps their derivatives finite where a line is tangent)
    x_top = xp.sqrt(xp.clip(r2 - ay**2, 1e-300, None))
    y_side = xp.sqrt(xp.clip(r2 - ax**2, 1e-300, None))
    # Corner outside the disk: two triangles from the centre plus the sector between them.
    sector = xp.arctan2(ay, x_top) - xp.arctan2(y_side, ax)
    cut = 0.5 * (x_top * ay + ax * y_side + r2 * sector)
    area = xp.where(ax**2 + ay**2 <= r2, ax * ay, cut)
    return xp.sign(x) * xp.sign(y) * area


def disk_cell_areas(
    edges: torch.Tensor, centre: tuple[torch.Tensor, torch.Tensor], radius: torch.Tensor
) -> torch.Tensor:
    """Fraction (M, M) of each square cell of the grid covered by a disk.

    Args:
        edges: the M + 1 cell edges along each axis (the same for x and y), in any unit;
            cells are (y, x) = rows, columns, and must be square (uniform edges).
        centre: the disk's (x, y) centre in that unit (tensors: differentiable).
        radius: the disk's radius in that unit (a tensor: differentiable).

    Returns:
        Covered area / cell area in [0, 1], float64, by the signed-quadrant sums of the
        four corners of each cell (exact up to rounding).
    """
    cx, cy = centre
    ex = edges - cx  # (M + 1,) cell edges relative to the centre, along x
    ey = edges - cy
    q = quadrant_area(ex[None, :], ey[:, None], radius)  # (M + 1, M + 1)
    area = q[1:, 1:] - q[1:, :-1] - q[:-1, 1:] + q[:-1, :-1]
    pitch = edges[1] - edges[0]
    return (area / pitch**2).clamp(0.0, 1.0)
