"""Analytic ZWFS intensity model of N'Diaye et al. (2013, A&A 555, A94).

    I = P^2 + 2 b^2 (1 - cos theta) + 2 P b [sin(phi) sin(theta) - cos(phi) (1 - cos theta)]

P: pupil amplitude, b: the reference wave (the unaberrated pupil low-passed by the
dot, real for a centred system), phi: the aberration phase [rad], theta: the dot
phase [rad]. Valid while the aberration leaks little light through the dot (b is
taken from the unaberrated pupil). For theta = pi/2 the intensity is monotonic in
phi only on [-pi/4, 3 pi/4].

The inverse (`ndiaye_inverse`, the classical reconstruction): with sin(phi) ~ phi and
cos(phi) ~ 1 - phi^2 / 2 the model is a quadratic in phi,

    P b (1 - cos th) phi^2 + 2 P b sin(th) phi + C = 0,
    C = P^2 + 2 b^2 (1 - cos th) - 2 P b (1 - cos th) - I,

whose physical root (the one that is 0 for the unaberrated frame) is

    phi = [-sin th + sqrt(delta)] / (1 - cos th),
    delta = sin^2 th - (1 - cos th) C / (P b).

For P = 1 this is pyZELDA's `ZELDA.analyze` determinant and root; a negative delta (the
intensity beyond the extremum of the model) is set to 0, as pyZELDA does. P is the
normalised pupil amplitude (the square root of the clear-pupil frame), b the reference
wave of the zero-aberration system (`ZWFSModel.reference_wave`), th the dot phase at the
chosen wavelength. One wavelength at a time: for th = pi/2 the model is monotonic in
phi only on [-pi/4, 3 pi/4], so beyond ~lambda/8 of OPD the reconstruction fails; that
is the physics the networks are meant to beat.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["ndiaye_intensity", "ndiaye_inverse", "opd_to_phase"]


def opd_to_phase(opd_nm: torch.Tensor, wavelength_nm: float | torch.Tensor) -> torch.Tensor:
    """Phase [rad] = 2 pi OPD / lambda (positive OPD is positive phase, POPPY's sign)."""
    return 2 * torch.pi * opd_nm / wavelength_nm


def ndiaye_intensity(
    phi: torch.Tensor, pupil: torch.Tensor, b: torch.Tensor, theta: float | torch.Tensor
) -> torch.Tensor:
    """ZWFS intensity (same units as P^2) for phase maps `phi` [rad]; arrays broadcast."""
    theta = torch.as_tensor(theta, dtype=phi.dtype, device=phi.device)
    one_minus_cos = 1 - torch.cos(theta)
    return (
        pupil**2
        + 2 * b**2 * one_minus_cos
        + 2 * pupil * b * (torch.sin(phi) * torch.sin(theta) - torch.cos(phi) * one_minus_cos)
    )


def ndiaye_inverse(
    intensity: np.ndarray, pupil: np.ndarray, b: np.ndarray, theta_rad: float
) -> np.ndarray:
    """Phase [rad] from normalised ZWFS intensity, second-order N'Diaye inversion.

    Args:
        intensity: (..., H, W) clear-pupil-normalised ZWFS frames.
        pupil: (H, W) normalised pupil amplitude P (sqrt of the clear-pupil frame).
        b: (H, W) real reference wave in the same units.
        theta_rad: dot phase [rad] at this wavelength.

    Returns:
        (..., H, W) float64 phase [rad], 0 where P b = 0.
    """
    c, s = np.cos(theta_rad), np.sin(theta_rad)
    if abs(1 - c) < 1e-6:
        raise ValueError(f"dot phase {theta_rad:.3g} rad gives no ZWFS signal (1 - cos = 0)")
    lit = pupil * b > 0
    pb = np.where(lit, pupil * b, 1.0)
    const = pupil**2 + 2 * b**2 * (1 - c) - 2 * pupil * b * (1 - c) - intensity
    delta = s**2 - (1 - c) * const / pb
    phi = (-s + np.sqrt(np.clip(delta, 0.0, None))) / (1 - c)
    return np.where(lit, phi, 0.0)
