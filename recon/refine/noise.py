"""The noise of normalised frames: one variance, one deviance, its null, the goodness of fit.

Photon (Poisson) plus read (Gaussian) noise, in the shifted-Poisson form (Snyder et al.
1993): with n counts per normalised unit and read noise r [e-], a pixel of intensity I
has mean counts mu = n I + r^2 (r^2 floored at 1 count, so that dark pixels keep a
finite weight) and variance mu. Everything below follows from that one `variance`: the
fit's Fisher weights 1 / sigma, the deviance it minimises, the deviance's distribution
at the truth (`good_fit`), and the Cramer-Rao bound (`recon.refine.crb`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import ndtr
from scipy.stats import poisson

from sim.config import SimConfig

__all__ = ["NOISELESS_MISFIT", "NoiseModel", "good_fit", "summed_deviance"]

NOISELESS_MISFIT = 1e-8
"""Largest misfit per pixel of a good fit to noiseless frames (an intensity residual of
1e-4 of the clear-pupil mean, RMS; a float32 engine reaches ~1e-14)."""


def shifted_poisson_deviance(d: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """2 [d ln(d / mu) - (d - mu)] per pixel: measured shifted counts d >= 0 against the
    model's mu > 0 (0 where they agree; no NaN gradient at d = 0)."""
    return 2 * (torch.xlogy(d, d) - torch.xlogy(d, mu) - (d - mu))


@dataclass(frozen=True)
class NoiseModel:
    """Photon (Poisson) and read (Gaussian) noise of normalised frames.

    Attributes:
        counts_per_unit: photo-electrons per pixel for a normalised intensity of 1
            (photons in the clear pupil / pupil pixels), one for all wavelengths or one
            per wavelength (a lab's clear level differs between them); None: no photon
            noise.
        read_noise_e: read noise [e- RMS per pixel].
        poisson: False: read noise alone (uniform weights, a Gaussian deviance).
    """

    counts_per_unit: float | tuple[float, ...] | None
    read_noise_e: float = 0.0
    poisson: bool = True

    @classmethod
    def from_photons(
        cls, photons: float | None, read_noise_e: float, pupil_pixels: int
    ) -> NoiseModel:
        """Photons in the clear pupil per frame and wavelength, spread over `pupil_pixels`,
        and read noise [e-] (`sim.detector.add_noise`'s model). Read noise without a photon
        level: frames scaled by 1e6 counts per unit without Poisson noise (uniform weights)."""
        read = float(read_noise_e)
        if read < 0 or (photons is not None and not photons > 0):
            raise ValueError(f"photons must be > 0 and read noise >= 0, got {photons}, {read}")
        if photons is None and read == 0:
            return cls(None, 0.0)
        if photons is None:
            return cls(1e6, read, poisson=False)
        return cls(float(photons) / pupil_pixels, read)

    @classmethod
    def from_camera(
        cls,
        clear_level_adu: Sequence[float],
        gain_e_per_adu: float,
        read_noise_e: float,
        pixel_area: float = 1.0,
    ) -> NoiseModel:
        """The noise of lab frames normalised by their clear level (`data.lab.LabFrames`).

        A model pixel averages `pixel_area` camera pixels, so one normalised unit holds
        clear_level x gain x pixel_area photo-electrons (per wavelength) and the read
        noise of the sum is sqrt(pixel_area) x read_noise_e. The dark and clear frames
        are taken as averages of many frames (their own noise neglected).
        """
        if not gain_e_per_adu > 0 or read_noise_e < 0 or not pixel_area > 0:
            raise ValueError(
                f"gain must be > 0 e-/ADU and read noise >= 0 e-, got {gain_e_per_adu}, "
                f"{read_noise_e}"
            )
        levels = np.asarray(clear_level_adu, dtype=np.float64).ravel()
        if not (levels > 0).all():
            raise ValueError(f"clear level must be > 0 ADU, got {levels.tolist()}")
        counts = tuple(float(x) for x in levels * gain_e_per_adu * pixel_area)
        return cls(counts[0] if len(counts) == 1 else counts, read_noise_e * pixel_area**0.5)

    @classmethod
    def from_config(cls, cfg: SimConfig, pupil_pixels: int) -> NoiseModel:
        """The noise of `sim.detector.add_noise` for a config (photons spread over the pupil).

        Read noise without a photon level: `add_noise` scales the frames by 1e6 counts
        per unit and adds no Poisson noise; the weights are then uniform.
        """
        return cls.from_photons(cfg.detector.photons, cfg.detector.read_noise_e, pupil_pixels)

    def counts(self, like: torch.Tensor) -> torch.Tensor | float:
        """Counts per unit broadcastable against `like` (..., L, N, N): a scalar, or (L, 1, 1)."""
        n = self.counts_per_unit
        if isinstance(n, tuple):
            if like.ndim < 3 or like.shape[-3] != len(n):
                raise ValueError(f"{len(n)} clear levels for frames of shape {tuple(like.shape)}")
            return torch.as_tensor(n, dtype=like.dtype, device=like.device)[:, None, None]
        return n

    @property
    def mean_counts(self) -> float | None:
        """Counts per unit averaged over the wavelengths (None without photon noise)."""
        n = self.counts_per_unit
        return None if n is None else float(np.mean(n))

    @property
    def noisy(self) -> bool:
        """True when the frames carry a photon level (weights are not uniform)."""
        return self.counts_per_unit is not None

    @property
    def shift(self) -> float:
        """r^2 [counts], floored at 1 count: the shifted-Poisson offset."""
        return max(self.read_noise_e**2, 1.0)

    def variance(self, intensity: torch.Tensor) -> torch.Tensor:
        """Per-pixel variance [normalised units^2] of frames whose mean is `intensity`:
        (n I + r^2) / n^2 (I clamped at 0); r^2 / n^2 for read noise alone; 1 without
        noise (plain least squares). Everything else derives from it."""
        if self.counts_per_unit is None:
            return torch.ones_like(intensity)
        n = self.counts(intensity)
        if not self.poisson:
            sigma = max(self.read_noise_e, 1e-3) / n
            return torch.ones_like(intensity) * sigma**2
        return (intensity.clamp(min=0.0) * n + self.shift) / n**2

    def weights(self, intensity: torch.Tensor) -> torch.Tensor:
        """1 / sigma at the model's `intensity`: the Fisher weights of the deviance."""
        return self.variance(intensity).rsqrt()

    def clamped_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames at least -r^2 / n (measured shifted counts d >= 0, as in `deviance`):
        the Fisher-scoring residual `weights(I) (I - clamped_frames(y))` is then exactly
        the deviance's gradient, dark pixels with negative read noise included."""
        if self.counts_per_unit is None or not self.poisson:
            return frames
        floor = -self.shift / self.counts(frames)
        return frames.clamp(min=floor) if isinstance(floor, float) else torch.maximum(frames, floor)

    def deviance(self, intensity: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """Per-pixel deviance (same shape) of measured `frames` from model `intensity`.

        Twice the negative log-likelihood ratio to a perfect fit, ~1 per pixel at the
        truth: the shifted-Poisson deviance with photons; the squared weighted residual
        with read noise alone or without noise. Its Gauss-Newton form is the weighted
        residual `weights(I) (I - clamped_frames(y))` (Fisher scoring), unlike a chi^2
        weighted by the measured frames, which is biased at low counts.
        """
        if self.counts_per_unit is None or not self.poisson:
            return ((intensity - frames) * self.weights(intensity)).square()
        n = self.counts(intensity)
        mu = intensity.clamp(min=0.0) * n + self.shift
        d = (frames * n + self.shift).clamp(min=0.0)
        return shifted_poisson_deviance(d, mu)

    def deviance_null(self, intensity: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance per pixel (same shape) of `deviance` when `intensity` is the
        truth: 1 and 2 for Gaussian noise; with photons, from `_deviance_null_table`
        (Poisson counts plus Gaussian read noise, by quadrature), interpolated."""
        if self.counts_per_unit is None or not self.poisson:
            return torch.ones_like(intensity), torch.full_like(intensity, 2.0)
        grid_u, mean, var = _deviance_null_table(float(self.read_noise_e))
        u = torch.log1p(intensity.clamp(min=0.0) * self.counts(intensity)).to(torch.float64)
        u = torch.nan_to_num(u, nan=0.0)  # a NaN model (a NaN start) must not index out
        pos = (u / grid_u[1]).clamp(max=len(grid_u) - 1.000001)  # the grid is uniform in u
        i = pos.floor().long()
        frac = pos - i
        mean_t = torch.as_tensor(mean, device=u.device)
        var_t = torch.as_tensor(var, device=u.device)
        return (
            torch.lerp(mean_t[i], mean_t[i + 1], frac),
            torch.lerp(var_t[i], var_t[i + 1], frac),
        )


@functools.lru_cache(maxsize=8)
def _deviance_null_table(read_noise_e: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and variance of the shifted-Poisson deviance per pixel (`NoiseModel.deviance`)
    at true counts c = 0..1e4 (a grid uniform in log(1 + c)).

    For each Poisson count k the read noise g ~ N(0, r^2) is integrated exactly where the
    measured counts d = k + r^2 + g clamp at 0 (deviance 2 mu, with probability
    Phi(-(k + r^2) / r)) and by 64-node Gauss-Legendre above (a smooth integrand).
    Above 1e4 counts the deviance is chi^2 with one degree of freedom to ~1e-5 (mean 1,
    variance 2). Written here because no library gives these moments; ~0.2 s, once per
    read noise.
    """
    r = float(read_noise_e)
    shift = NoiseModel(1.0, r).shift
    leg_x, leg_w = np.polynomial.legendre.leggauss(64)
    grid_u = np.linspace(0.0, np.log1p(1e4), 257)
    mean, var = np.empty_like(grid_u), np.empty_like(grid_u)
    for j, c in enumerate(np.expm1(grid_u)):
        k = np.arange(
            max(0.0, np.floor(c - 12 * np.sqrt(c) - 12)), np.ceil(c + 12 * np.sqrt(c) + 24)
        )
        pk = poisson.pmf(k, c) if c > 0 else (k == 0).astype(float)
        mu = torch.tensor(c + shift, dtype=torch.float64)

        def dev(d: np.ndarray, mu: torch.Tensor = mu) -> np.ndarray:
            return shifted_poisson_deviance(torch.as_tensor(d), mu).numpy()

        if r == 0:
            m1 = dev(k + shift)
            m2 = m1**2
        else:
            g0 = -(k + shift) / r  # the read noise (in sigmas) below which d clamps at 0
            lo = np.maximum(g0, -12.0)[:, None]
            g = lo + (12.0 - lo) * (leg_x + 1) / 2  # (K, 64) nodes on [lo, 12] sigmas
            w = leg_w * (12.0 - lo) / 2 * np.exp(-0.5 * g**2) / np.sqrt(2 * np.pi)
            dv = dev(k[:, None] + shift + r * g)
            clamped = ndtr(g0)
            at_zero = dev(np.zeros(1))[0]  # d clamped at 0: the deviance is 2 mu
            m1 = (w * dv).sum(1) + clamped * at_zero
            m2 = (w * dv**2).sum(1) + clamped * at_zero**2
        mean[j] = (pk * m1).sum()
        var[j] = (pk * m2).sum() - mean[j] ** 2
    mean[-1], var[-1] = 1.0, 2.0
    return grid_u, mean, var


GOOD_FIT_Z = 3.0
"""`good_fit`'s threshold [standard deviations of the deviance's null]: 0.13 % of fits at
the truth judged poor (2.3 % at 2, nearly half of a 5 % restart budget on false alarms
alone); a fit in a wrong minimum lies 40-600 above (docs/lab.md)."""


def summed_deviance(
    noise: NoiseModel, intensity: torch.Tensor, frames: torch.Tensor
) -> torch.Tensor:
    """A fit's cost (B,): the deviance summed over every pixel and wavelength, float64."""
    d = noise.deviance(intensity.to(torch.float64), frames.to(torch.float64))
    return d.flatten(1).sum(1)


def good_fit(
    noise: NoiseModel,
    intensity: torch.Tensor,
    frames: torch.Tensor,
    z_max: float = GOOD_FIT_Z,
    deviance: torch.Tensor | None = None,
) -> torch.Tensor:
    """Goodness of fit (B,) of model intensities (B, L, N, N) to measured frames.

    With a photon level: the summed deviance is at most z_max standard deviations above
    its mean at the truth (`NoiseModel.deviance_null`, pixels independent). Without:
    misfit <= `NOISELESS_MISFIT` per pixel. The null does not subtract the fitted
    parameters (35 modes: negligible; a zonal fit's pixels: lenient, z ~ -10 at 32 px).
    `deviance`: `summed_deviance(noise, intensity, frames)` when the caller has it.
    """
    dev = summed_deviance(noise, intensity, frames) if deviance is None else deviance
    n_px = frames[0].numel()
    if not noise.noisy:
        return dev <= NOISELESS_MISFIT * n_px
    mean, var = noise.deviance_null(intensity)
    return dev - mean.flatten(1).sum(1) <= z_max * var.flatten(1).sum(1).sqrt()
