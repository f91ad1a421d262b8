"""The frames' photon level and read noise, measured from a least-squares fit's residuals.

A photon transfer curve from the frames themselves: where a fit reproduces the frames,
the residual r = y - I at model intensity I has variance (`NoiseModel.variance`)

    E[r^2] = I / n + (r_e / n)^2,

so a straight line through (I, r^2) over every lit pixel of one wavelength gives the
counts per unit n (1 / slope) and the read noise r_e (sqrt(intercept) x n). Written here
because it needs the engine's model of each frame, which no library has. Fits whose
misfit is far above the median (a start outside the basin) are left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from recon.refine.noise import NOISELESS_MISFIT, NoiseModel

__all__ = ["NoiseEstimate", "estimate_noise"]

SLOPE_SIGMAS = 3.0
"""Photon noise is seen when the variance grows with intensity by this many standard errors."""

OUTLIER_MISFIT = 1.5
"""Fits with a misfit above this many times the median are left out of the estimate."""


@dataclass(frozen=True)
class NoiseEstimate:
    """Measured noise of normalised frames.

    counts_per_unit: (L,) photo-electrons per pixel per normalised unit (None: noiseless
        to `NOISELESS_MISFIT`; NaN slope: no photon noise seen); read_noise_e: [e- RMS]
        (the stated value when one was given); read_noise_se_e: its standard error [e-];
        sigma: residual RMS [normalised units] where no photon noise is seen; frames,
        pixels: what the estimate used.
    """

    counts_per_unit: tuple[float, ...] | None
    read_noise_e: float
    read_noise_se_e: float
    sigma: float
    frames: int
    pixels: int

    def model(self) -> NoiseModel:
        """The `NoiseModel` of these figures."""
        if self.counts_per_unit is None:
            return NoiseModel(None)
        if not all(np.isfinite(self.counts_per_unit)):  # read noise alone: uniform weights
            return NoiseModel(1e6, self.sigma * 1e6, poisson=False)
        n = self.counts_per_unit
        return NoiseModel(n[0] if len(n) == 1 else n, self.read_noise_e)

    def describe(self, pupil_pixels: int, clear_level_adu: np.ndarray | None = None,
                 pixel_area: float = 1.0) -> str:  # fmt: skip
        """One line with units: photons per frame and, with the clear level [ADU], the gain."""
        if self.counts_per_unit is None:
            return f"noiseless frames (misfit < {NOISELESS_MISFIT:g} per pixel)"
        n = np.asarray(self.counts_per_unit)
        if not np.isfinite(n).all():
            return f"no photon noise seen; Gaussian noise of {self.sigma:.3g} (normalised units)"
        text = f"{np.mean(n) * pupil_pixels:.3g} photons per frame and wavelength"
        if clear_level_adu is not None:
            gain = n / (np.asarray(clear_level_adu, dtype=float) * pixel_area)
            text += f" (gain {', '.join(f'{g:.3g}' for g in gain)} e-/ADU)"
        return (
            f"{text}, read noise {self.read_noise_e:.2g} +- {self.read_noise_se_e:.1g} e- "
            f"(from {self.frames} frames, {self.pixels} pixels)"
        )


def _line(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    """Slope, intercept and their standard errors of E[y] = a x + b for squared
    residuals y: weighted least squares with var(y) = 2 (a x + b)^2 (a squared Gaussian),
    the weights from the previous pass (three passes from ordinary least squares)."""
    design = np.stack([x, np.ones_like(x)], axis=1)
    w = np.ones_like(x)
    for _ in range(4):
        dw = design * w[:, None]
        normal = dw.T @ design
        coef = np.linalg.solve(normal, dw.T @ y)
        model = np.maximum(design @ coef, 1e-3 * max(float(np.mean(y)), 1e-300))
        w = 1.0 / (2.0 * model**2)
    cov = np.linalg.inv(normal)  # the weights are the inverse variances
    return float(coef[0]), float(coef[1]), float(np.sqrt(cov[0, 0])), float(np.sqrt(cov[1, 1]))


def estimate_noise(
    intensity: torch.Tensor | np.ndarray,
    frames: torch.Tensor | np.ndarray,
    lit: np.ndarray,
    misfit: np.ndarray | None = None,
    read_noise_e: float | None = None,
) -> NoiseEstimate:
    """Photon level per wavelength and read noise from frames (B, L, N, N) and the model
    `intensity` of their fits; `lit` (N, N) the pixels to use; `misfit` (B,) the fits'
    misfits (outliers left out); `read_noise_e`: a stated read noise [e-] (kept)."""
    i_all = np.asarray(torch.as_tensor(intensity).cpu(), dtype=np.float64)
    y_all = np.asarray(torch.as_tensor(frames).cpu(), dtype=np.float64)
    keep = np.ones(len(i_all), dtype=bool)
    if misfit is not None and len(misfit) > 2:
        keep = np.asarray(misfit) <= OUTLIER_MISFIT * np.median(misfit)
    i_all, y_all = i_all[keep][..., lit], y_all[keep][..., lit]  # (b, L, P)
    r2 = (y_all - i_all) ** 2
    frames_used, pixels = int(keep.sum()), int(r2[:, 0].size)
    if np.median(r2) < NOISELESS_MISFIT:
        return NoiseEstimate(None, 0.0, 0.0, 0.0, frames_used, pixels)
    counts, read_sq, read_se = [], [], []
    for band in range(r2.shape[1]):
        a, b, a_se, b_se = _line(i_all[:, band].ravel(), r2[:, band].ravel())
        if not a > SLOPE_SIGMAS * a_se:  # no photon noise seen: Gaussian noise alone
            sigma = float(np.sqrt(r2.mean()))
            return NoiseEstimate((float("nan"),), 0.0, 0.0, sigma, frames_used, pixels)
        counts.append(1.0 / a)
        read_sq.append(b / a**2)  # r_e^2 = b n^2
        read_se.append(b_se / a**2)
    r_sq = float(np.mean(read_sq))
    r_sq_se = float(np.sqrt(np.sum(np.square(read_se)))) / len(read_se)
    if read_noise_e is not None:
        read, read_err = float(read_noise_e), 0.0
    else:
        read = float(np.sqrt(max(r_sq, 0.0)))
        read_err = r_sq_se / (2 * read) if read > 0 else float(np.sqrt(r_sq_se))
    return NoiseEstimate(tuple(counts), read, read_err, 0.0, frames_used, pixels)
