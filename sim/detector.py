"""Detector effects on re-imaged pupil frames: binning, photon and read noise."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["add_noise", "bin_frames"]


def bin_frames(frames: torch.Tensor, binning: int) -> torch.Tensor:
    """Average b x b pixel blocks: (..., H, W) -> (..., H/b, W/b)."""
    if binning == 1:
        return frames
    *lead, h, w = frames.shape
    blocks = frames.reshape(*lead, h // binning, binning, w // binning, binning)
    return blocks.mean(dim=(-3, -1))


def add_noise(
    intensity: np.ndarray,
    indices: np.ndarray,
    seed: int,
    stream: int,
    photons: float | None,
    read_noise_e: float,
    pupil_pixels: int,
) -> np.ndarray:
    """Noisy normalised frames (B, L, H, W), drawn deterministically per sample.

    intensity is normalised to a mean of 1 in the clear pupil; `photons` is the
    photon count in the clear pupil per frame, spread over `pupil_pixels` pixels.
    Photon noise is Poisson, read noise Gaussian [e-]; the result is divided back
    by the mean clear-pupil count per pixel.
    """
    if photons is None and read_noise_e == 0:
        return intensity
    per_pixel = (photons if photons is not None else 1e6 * pupil_pixels) / pupil_pixels
    out = np.empty_like(intensity)
    for row, i in enumerate(np.asarray(indices, dtype=np.int64)):
        rng = np.random.default_rng([seed, stream, int(i), 1])
        counts = np.clip(intensity[row], 0, None) * per_pixel
        if photons is not None:
            counts = rng.poisson(counts).astype(np.float64)
        if read_noise_e > 0:
            counts = counts + rng.normal(0.0, read_noise_e, size=counts.shape)
        out[row] = counts / per_pixel
    return out
