"""Normalisation statistics from the training data, saved in every checkpoint.

Inputs: each wavelength's intensity (clear-pupil normalised, dimensionless) is shifted
and scaled by its mean and standard deviation over the pupil pixels of the training
samples. Targets: the network predicts OPD / `opd_scale_nm`, with `opd_scale_nm` the
RMS of the training OPD over the pupil (all samples together), so that its targets
are of order 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["NormStats", "compute_stats"]

MIN_STD = 1e-6
"""Floor of a standard deviation (dimensionless or nm), so that a flat channel stays finite."""


@dataclass(frozen=True)
class NormStats:
    """Per-wavelength intensity statistics and the OPD scale.

    Attributes:
        intensity_mean: (L,) mean intensity over the pupil, per wavelength (dimensionless).
        intensity_std: (L,) standard deviation over the pupil, per wavelength.
        opd_scale_nm: RMS of the training OPD over the pupil [nm].
        n_samples: number of training samples the statistics come from.
    """

    intensity_mean: tuple[float, ...]
    intensity_std: tuple[float, ...]
    opd_scale_nm: float
    n_samples: int

    def __post_init__(self) -> None:
        if len(self.intensity_mean) != len(self.intensity_std) or not self.intensity_mean:
            raise ValueError("intensity_mean and intensity_std need one value per wavelength")
        values = [*self.intensity_mean, *self.intensity_std, self.opd_scale_nm]
        if not np.all(np.isfinite(values)):
            raise ValueError(
                f"normalisation statistics are not finite (NaN/inf in the training data?): {self}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-able dict (what checkpoints store)."""
        d = asdict(self)
        d["intensity_mean"] = list(self.intensity_mean)
        d["intensity_std"] = list(self.intensity_std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NormStats:
        """Inverse of `to_dict`."""
        return cls(
            intensity_mean=tuple(float(v) for v in d["intensity_mean"]),
            intensity_std=tuple(float(v) for v in d["intensity_std"]),
            opd_scale_nm=float(d["opd_scale_nm"]),
            n_samples=int(d["n_samples"]),
        )


def _spread(n: int, k: int) -> np.ndarray:
    """At most k indices spread evenly over range(n) (deterministic)."""
    if n <= k:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, k).round().astype(np.int64))


def compute_stats(
    dataset: Dataset,
    pupil: torch.Tensor,
    indices: Sequence[int] | None = None,
    max_samples: int = 1024,
) -> NormStats:
    """Statistics from at most `max_samples` samples of `dataset` (evenly spread).

    Args:
        dataset: items `(intensity (L, H, W), opd (1, H, W) [nm], ...)`.
        pupil: (H, W) transmission; pixels with transmission > 0.5 count as pupil.
        indices: the dataset indices that are training samples (None: all).
        max_samples: cap on the samples read.
    """
    pool = np.arange(len(dataset)) if indices is None else np.asarray(indices, dtype=np.int64)
    if pool.size == 0:
        raise ValueError("cannot compute normalisation statistics from an empty training set")
    chosen = pool[_spread(pool.size, max_samples)]
    inside = pupil > 0.5  # (H, W) bool
    s1 = s2 = None
    opd_sq, n_pix = 0.0, 0
    for i in chosen:
        intensity, opd = dataset[int(i)][:2]
        v = intensity[:, inside].double()  # (L, H, W) -> (L, P)
        s1 = v.sum(1) if s1 is None else s1 + v.sum(1)
        s2 = (v * v).sum(1) if s2 is None else s2 + (v * v).sum(1)
        o = opd[0][inside].double()  # (1, H, W) -> (P,)
        opd_sq += float(((o - o.mean()) ** 2).sum())  # piston is unobservable: removed
        n_pix += o.numel()
    assert s1 is not None and s2 is not None
    count = n_pix  # pupil pixels per wavelength, all samples
    mean = s1 / count
    std = (s2 / count - mean * mean).clamp_min(0).sqrt().clamp_min(MIN_STD)
    return NormStats(
        intensity_mean=tuple(mean.tolist()),
        intensity_std=tuple(std.tolist()),
        opd_scale_nm=max(float(np.sqrt(opd_sq / n_pix)), MIN_STD),
        n_samples=int(chosen.size),
    )
