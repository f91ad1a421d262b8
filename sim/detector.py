"""Detector effects on re-imaged pupil frames: binning, photon and read noise."""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)

__all__ = ["add_noise", "bin_frames"]


def bin_frames(frames: torch.Tensor, binning: int) -> torch.Tensor:
    """Average b x b pixel blocks: (..., H, W) -> (..., H/b, W/b)."""
    if binning == 1:
        return frames
    *lead, h, w = frames.shape
    blocks = frames.reshape(*lead, h // binning, binning, w // binning, binning)
    return blocks.mean(dim=(-3, -1))


def add_noise(
    intensity: ArrayT,
    indices: np.ndarray,
    seed: int,
    stream: int,
    photons: float | None,
    read_noise_e: float,
    pupil_pixels: int,
) -> ArrayT:
    """Noisy normalised frames (B, L, H, W), drawn deterministically per sample.

    intensity is normalised to a mean of 1 in the clear pupil; `photons` is the
    photon count in the clear pupil per frame, spread over `pupil_pixels` pixels.
    Photon noise is Poisson, read noise Gaussian [e-]; the result is divided back
    by the mean clear-pupil count per pixel.

    A tensor is drawn on its own device (`torch.poisson` and `torch.randn` with one
    generator per sample, seeded by (seed, stream, index)): online training on a GPU
    never copies its frames to the host. A NumPy array is drawn on the CPU in float64 and
    returned as NumPy. Sample i's noise depends on (seed, stream, i) and the device type
    only (the CPU and CUDA generators differ).
    """
    if photons is None and read_noise_e == 0:
        return intensity
    frames = torch.as_tensor(intensity) if isinstance(intensity, np.ndarray) else intensity
    if isinstance(intensity, np.ndarray):
        frames = frames.to(torch.float64)
    per_pixel = (photons if photons is not None else 1e6 * pupil_pixels) / pupil_pixels
    out = torch.empty_like(frames)
    gen = torch.Generator(frames.device)
    for row, i in enumerate(np.asarray(indices, dtype=np.int64)):
        gen.manual_seed(_sample_seed(seed, stream, int(i)))
        counts = frames[row].clamp(min=0) * per_pixel
        if photons is not None:
            counts = torch.poisson(counts, generator=gen)
        if read_noise_e > 0:
            noise = torch.randn(counts.shape, generator=gen, device=counts.device)
            counts = counts + read_noise_e * noise.to(counts.dtype)
        out[row] = counts / per_pixel
    return out.numpy() if isinstance(intensity, np.ndarray) else out


def _sample_seed(seed: int, stream: int, index: int) -> int:
    """A 63-bit generator seed of (seed, stream, index) (NumPy's SeedSequence hash)."""
    state = np.random.SeedSequence([seed, stream, index, 1]).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))
