"""Wavelength channels picked by value: one rule for the readers and every estimator."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["WAVELENGTH_MATCH_M", "wavelength_indices"]

WAVELENGTH_MATCH_M = 1e-9
"""Two wavelengths are the same within this [m] (1e-3 um, far below any filter width)."""


def wavelength_indices(available_m: Sequence[float], wanted_m: Sequence[float]) -> np.ndarray:
    """Indices into `available_m` of each wanted wavelength, in the wanted order.

    Raises `ValueError` naming the first missing wavelength and those available [um].
    """
    have = np.asarray(available_m, dtype=np.float64)
    if len(wanted_m) == 0:
        raise ValueError("no wavelength asked for")
    idx = []
    for w in wanted_m:
        hit = np.flatnonzero(np.abs(have - float(w)) <= WAVELENGTH_MATCH_M)
        if hit.size == 0:
            avail = ", ".join(f"{x * 1e6:.4g}" for x in have)
            raise ValueError(
                f"wavelength {float(w) * 1e6:.4g} um is not available; have {avail} um"
            )
        idx.append(int(hit[0]))
    return np.asarray(idx, dtype=np.int64)
