"""Normalisation statistics (`recon.models.NormStats`) computed from the training data.

Inputs: each wavelength's intensity (clear-pupil normalised, dimensionless) is shifted
and scaled by its mean and standard deviation over the pupil pixels of the training
samples. Targets: the network predicts OPD / `opd_scale_nm`, with `opd_scale_nm` the
RMS of the training OPD over the pupil (all samples together), so that its targets
are of order 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from data.schema import pupil_mask
from recon.models.recon_model import MIN_STD, NormStats

__all__ = ["compute_stats"]


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
        pupil: (H, W) transmission; `data.schema.pupil_mask` says which pixels count.
        indices: the dataset indices that are training samples (None: all).
        max_samples: cap on the samples read.
    """
    pool = np.arange(len(dataset)) if indices is None else np.asarray(indices, dtype=np.int64)
    if pool.size == 0:
        raise ValueError("cannot compute normalisation statistics from an empty training set")
    chosen = pool[_spread(pool.size, max_samples)]
    inside = torch.as_tensor(pupil_mask(np.asarray(pupil)))  # (H, W) bool
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
