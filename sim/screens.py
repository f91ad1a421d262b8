"""Power-law phase screens: OPD maps whose power spectrum falls as f^-index.

A screen is white Gaussian noise shaped by sqrt(PSD), PSD(f) = (f^2 + f0^2)^(-index/2)
(f0 = 1 / outer scale; 0: a pure power law), on a grid `oversize` times the pupil,
then cropped to the pupil: the pupil sees every spatial frequency its grid holds (to
the pixel's Nyquist) and none of the FFT's periodic wrap. Sample i's noise comes from
its own generator (seed, stream, i), so a screen does not depend on the batch, the
device or the number of processes (up to the FFT's rounding on the device).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["SCREEN_STREAM", "power_law_screens"]

SCREEN_STREAM = 3
"""The fourth element of a sample's generator key: screens draw apart from its modes."""


def _psd_sqrt(
    big: int, pitch_d: float, index: float, outer_scale_d: float | None, device: torch.device
) -> torch.Tensor:
    """sqrt(PSD) (big, big) on the FFT grid of `big` samples at `pitch_d` [D]; 0 at f = 0."""
    f1 = torch.fft.fftfreq(big, d=pitch_d, dtype=torch.float64, device=device)  # [1/D]
    f2 = f1[:, None] ** 2 + f1[None, :] ** 2
    f0_2 = 0.0 if outer_scale_d is None else 1.0 / outer_scale_d**2
    amp = (f2 + f0_2).clamp_min(1e-300) ** (-index / 4)  # sqrt of (f^2 + f0^2)^(-index/2)
    amp[0, 0] = 0.0  # no piston
    return amp


def power_law_screens(
    indices: np.ndarray,
    seed: int,
    stream: int,
    npix: int,
    index: float = 2.0,
    outer_scale_d: float | None = None,
    oversize: int = 4,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Screens (B, npix, npix), float64, unnormalised (the caller scales them), for the
    global sample `indices`.

    Args:
        npix: pixels across the pupil (the array width is the pupil diameter D).
        index: the PSD's power-law index (2: f^-2; Kolmogorov phase is 11/3).
        outer_scale_d: outer scale [D]; None: none (the big grid's size, oversize x D,
            sets the lowest frequency).
        oversize: the generating grid is this many times the pupil across.
    """
    big = npix * oversize
    dev = torch.device(device)
    amp = _psd_sqrt(big, 1.0 / npix, index, outer_scale_d, dev)
    noise = np.empty((len(indices), 2, big, big))
    for row, i in enumerate(np.asarray(indices, dtype=np.int64)):
        rng = np.random.default_rng([seed, stream, int(i), SCREEN_STREAM])
        noise[row] = rng.standard_normal((2, big, big))
    white = torch.as_tensor(noise, device=dev)
    spectrum = torch.complex(white[:, 0], white[:, 1]) * amp  # (B, big, big)
    screens = torch.fft.ifft2(spectrum).real  # (B, big, big)
    lo = (big - npix) // 2
    return screens[:, lo : lo + npix, lo : lo + npix]
