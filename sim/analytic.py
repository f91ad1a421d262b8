"""Analytic ZWFS intensity model of N'Diaye et al. (2013, A&A 555, A94).

    I = P^2 + 2 b^2 (1 - cos theta) + 2 P b [sin(phi) sin(theta) - cos(phi) (1 - cos theta)]

P: pupil amplitude, b: the reference wave (the unaberrated pupil low-passed by the
dot, real for a centred system), phi: the aberration phase [rad], theta: the dot
phase [rad]. Valid while the aberration leaks little light through the dot (b is
taken from the unaberrated pupil). For theta = pi/2 the intensity is monotonic in
phi only on [-pi/4, 3 pi/4].
"""

from __future__ import annotations

import torch

__all__ = ["ndiaye_intensity", "opd_to_phase"]


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
