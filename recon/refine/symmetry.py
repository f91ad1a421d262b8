"""The square grid's 8 symmetries: quarter turns, each with or without a transpose.

The pupil and the dot are symmetric under them and the engine commutes with them (to
1e-15, tested), so a base estimator's estimate of a turned copy of the frames, turned
back, is another start for the same OPD: what `RefinedEstimator` restarts poor fits from.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SYMMETRIES", "pupil_symmetries", "transform", "untransform"]

SYMMETRIES = [(k, t) for t in (False, True) for k in range(4)]
"""(k quarter turns, then a transpose or not); the identity first."""


def transform(a: np.ndarray, k: int, transpose: bool) -> np.ndarray:
    """Maps (..., N, N) turned by k quarter turns, then transposed."""
    a = np.rot90(a, k, axes=(-2, -1))
    return a.swapaxes(-1, -2) if transpose else a


def untransform(a: np.ndarray, k: int, transpose: bool) -> np.ndarray:
    """The inverse of `transform`."""
    a = a.swapaxes(-1, -2) if transpose else a
    return np.rot90(a, -k, axes=(-2, -1))


def pupil_symmetries(pupil: np.ndarray) -> list[tuple[int, bool]]:
    """The `SYMMETRIES` that leave `pupil` (N, N) as it is (all 8 for a circle; a
    hexagonal segmented pupil keeps the half turn and the two mirrors), identity first."""
    p = np.asarray(pupil)
    return [s for s in SYMMETRIES if np.allclose(transform(p, *s), p, atol=1e-12)]
