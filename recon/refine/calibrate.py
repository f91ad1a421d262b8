"""Self-calibration: the system fitted jointly with the OPD and the frames' fluxes.

A lab never knows its dot diameter and depth, the pupil's position and size on the
detector, or each frame's flux exactly. The system (`sim.system.SYSTEM_FIELDS`) enters
the one engine (`sim.zwfs.ZWFSModel.fields` with `sim.system.system_terms`: the pupil's
and the dot's exact areas, differentiable), each frame's flux as a log-factor, the OPD
in Noll modes on the nominal grid. `calibrate` fits all of them at once with the shared
solver (`recon.refine.solver`), a batch of one problem, on the deviance by Fisher
scoring as the refinement does; the Jacobian by forward mode, one tangent per kind of
parameter. With ``fit_system=False`` it fits OPD and flux only (the system held).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.errors import KnownError
from common.io import write_json_atomic
from recon.refine.noise import NoiseModel, summed_deviance
from recon.refine.solver import Damping, levenberg_marquardt
from sim.config import SimConfig
from sim.system import NOMINAL_SYSTEM, SYSTEM_FIELDS, SYSTEM_UNITS, system_terms
from sim.zernike import zernike_basis
from sim.zwfs import ZWFSModel

__all__ = [
    "CalibrationResult",
    "calibrate",
    "calibrated_intensity",
    "load_calibration",
    "save_calibration",
    "system_intensity",
]

# scales of the fitted unknowns, so that the damped normal equations are well balanced
_SYSTEM_UNIT = torch.tensor([0.01, 0.01, 0.1, 0.1, 0.01], dtype=torch.float64)
_COEFF_UNIT_NM = 10.0
_FLUX_UNIT = 0.01


class CalibrationFileError(KnownError):
    """A calibration file that is missing or does not hold a system."""


def system_intensity(
    engine: ZWFSModel,
    basis: torch.Tensor,
    coeffs_nm: torch.Tensor,
    system: torch.Tensor,
    log_flux: torch.Tensor,
) -> torch.Tensor:
    """Normalised intensities (B, L, N, N) of a system, differentiable in everything.

    Args:
        engine: the engine (binning 1); basis: (J, N, N) unit-RMS modes.
        coeffs_nm: (B, J) [nm RMS]; system: (5,) as `SYSTEM_FIELDS`;
        log_flux: (B, L), each frame scaled by exp(log_flux).
    """
    amplitude, kernel, mix = system_terms(engine, system)
    opd = torch.einsum("bj,jhw->bhw", coeffs_nm, basis)
    _, e_out = engine.fields(opd, amplitude, kernel, mix)
    intensity = e_out[:, :, 0].square() + e_out[:, :, 1].square()
    return intensity * log_flux.exp()[..., None, None]


@dataclass
class CalibrationResult:
    """system (5,) as `SYSTEM_FIELDS`; coeffs_nm (B, J); log_flux (B, L); misfit (deviance
    per pixel); iterations; status (why the solver stopped)."""

    system: np.ndarray
    coeffs_nm: np.ndarray
    log_flux: np.ndarray
    misfit: float
    iterations: int
    status: str


def _jacobian_by_kind(
    fn: Callable[[torch.Tensor], torch.Tensor],
    p: torch.Tensor,
    n_samples: int,
    per_sample: int,
    n_shared: int,
) -> torch.Tensor:
    """Dense Jacobian (R, P) of fn at p by forward mode, one tangent per *kind* of parameter.

    p = [each sample's `per_sample` parameters, sample by sample, then `n_shared`]. Sample
    i's outputs (rows i R/B .. (i+1) R/B) depend only on its own parameters and the shared
    ones, so one tangent that moves parameter q of every sample at once gives column q
    of every sample's block: per_sample + n_shared forward passes instead of P.
    """
    n_p = p.numel()
    cols = torch.arange(n_samples * per_sample).reshape(n_samples, per_sample)
    tangents = torch.zeros(per_sample + n_shared, n_p, dtype=p.dtype)
    for k in range(per_sample):
        tangents[k, cols[:, k]] = 1.0
    for k in range(n_shared):
        tangents[per_sample + k, n_p - n_shared + k] = 1.0
    out = torch.func.vmap(lambda t: torch.func.jvp(fn, (p,), (t,))[1])(tangents)
    rows = out.shape[1] // n_samples
    jac = p.new_zeros(out.shape[1], n_p)
    for i in range(n_samples):
        block = slice(i * rows, (i + 1) * rows)
        jac[block, cols[i]] = out[:per_sample, block].T
    if n_shared:
        jac[:, n_p - n_shared :] = out[per_sample:].T
    return jac


class _CalibrationProblem:
    """The `recon.refine.solver.Problem` of all frames' unknowns together (a batch of one)."""

    def __init__(
        self,
        engine: ZWFSModel,
        basis: torch.Tensor,
        frames: torch.Tensor,
        coeffs0: torch.Tensor,
        system0: torch.Tensor,
        noise: NoiseModel,
        fit_opd: bool,
        fit_system: bool,
    ) -> None:
        self.engine, self.basis, self.frames, self.noise = engine, basis, frames, noise
        self.y_fit = noise.clamped_frames(frames)
        self.coeffs0, self.system0 = coeffs0, system0
        self.b, self.n_l = frames.shape[:2]
        self.n_fit = basis.shape[0] if fit_opd else 0  # fitted coefficients per sample
        self.n_sys = len(SYSTEM_FIELDS) if fit_system else 0

    def start(self) -> torch.Tensor:
        """The scaled unknowns (P,) at the start: [coefficients, log-fluxes] per sample,
        then the system's departures."""
        zeros = self.coeffs0.new_zeros
        per = [self.coeffs0[:, : self.n_fit] / _COEFF_UNIT_NM, zeros(self.b, self.n_l)]
        return torch.cat((torch.cat(per, dim=1).flatten(), zeros(self.n_sys)))

    def unpack(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(coefficients (B, J) [nm], system (5,), log-fluxes (B, L)) of scaled unknowns p."""
        per = p[: -self.n_sys or None].reshape(self.b, self.n_fit + self.n_l)
        c = per[:, : self.n_fit] * _COEFF_UNIT_NM if self.n_fit else self.coeffs0
        flux = per[:, self.n_fit :] * _FLUX_UNIT
        s = self.system0
        if self.n_sys:
            s = s + p[p.numel() - self.n_sys :] * _SYSTEM_UNIT.to(p.device)
        return c, s, flux

    def intensity(self, p: torch.Tensor) -> torch.Tensor:
        c, s, flux = self.unpack(p)
        return system_intensity(self.engine, self.basis, c, s, flux)

    def evaluate(self, x: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        intensity = self.intensity(x[0])
        cost = summed_deviance(self.noise, intensity[None], self.frames[None])
        return cost, (intensity[None],)  # the state of the one problem (batch 1)

    def gauss_newton(self, x: torch.Tensor, state: tuple, idx: torch.Tensor) -> tuple:
        intensity = state[0][0]  # (B, L, N, N)
        w = self.noise.weights(intensity).flatten()  # Fisher scoring: the weights at the model
        r = (intensity.flatten() - self.y_fit.flatten()) * w
        n_per = self.n_fit + self.n_l

        def flat(p: torch.Tensor) -> torch.Tensor:
            return self.intensity(p).flatten()

        jac = _jacobian_by_kind(flat, x[0], self.b, n_per, self.n_sys) * w[:, None]  # (R, P)
        h, g = jac.T @ jac, jac.T @ r
        d = torch.diagonal(h).clamp(min=1e-12 * float(torch.diagonal(h).max()))
        return h, g, d

    def step(self, system: tuple, damping: torch.Tensor, sub: torch.Tensor) -> torch.Tensor:
        h, g, d = system
        return -torch.linalg.solve(h + damping[0] * torch.diag(d), g)[None]

    def step_size(self, step: torch.Tensor) -> torch.Tensor:
        return step.square().mean(1).sqrt()


def calibrate(
    cfg: SimConfig,
    frames: np.ndarray | torch.Tensor,
    coeffs0_nm: np.ndarray | torch.Tensor,
    modes: Sequence[int] | None = None,
    system0: Sequence[float] = NOMINAL_SYSTEM,
    fit_system: bool = True,
    noise: NoiseModel | None = None,
    fit_opd: bool = True,
    max_iter: int = 40,
    device: str | torch.device = "cpu",
) -> CalibrationResult:
    """Joint Levenberg-Marquardt fit of the system, the OPD coefficients and the fluxes.

    Args:
        cfg: the nominal system (binning 1). frames: (B, L, N, N) measured, normalised.
        coeffs0_nm: (B, J) start [nm RMS] (e.g. a refinement with the nominal system), or
            with ``fit_opd=False`` the known aberrations (a DM poke sequence), held fixed.
        modes: Noll indices of the coefficients (default: the config's 2..noll_max).
        system0: start (or, with ``fit_system=False``, the fixed value) of the system.
        noise: the frames' noise (`NoiseModel`); None: least squares.
        fit_opd: False for a calibration set of known aberrations.
        max_iter: Gauss-Newton steps; stops when the deviance falls by less than 1e-10 of
            itself (or by less than 1, the noise's unit, with a photon level).
    """
    if cfg.detector.binning != 1:
        raise ValueError("calibration needs detector.binning = 1")
    f64 = torch.float64
    exact = cfg.model_copy(update={"precision": "complex128"})
    with torch.no_grad():
        engine = ZWFSModel(exact, device)
    modes = list(range(2, cfg.aberration.noll_max + 1)) if modes is None else list(modes)
    basis = torch.as_tensor(zernike_basis(modes, cfg.pupil.npix), dtype=f64, device=device)
    y = torch.as_tensor(np.asarray(frames), dtype=f64, device=device)
    noise = noise if noise is not None else NoiseModel(None)
    problem = _CalibrationProblem(
        engine, basis, y, torch.as_tensor(np.asarray(coeffs0_nm), dtype=f64, device=device),
        torch.tensor(system0, dtype=f64, device=device), noise, fit_opd, fit_system,
    )  # fmt: skip
    settings = Damping(max_iter, 0.0, 1e-10, 1.0 if noise.noisy else 0.0)
    sol = levenberg_marquardt(problem, problem.start()[None], settings)
    c, s, flux = problem.unpack(sol.x[0])
    return CalibrationResult(
        s.detach().cpu().numpy().copy(),
        c.detach().cpu().numpy(),
        flux.detach().cpu().numpy(),
        float(sol.cost[0]) / y.numel(),
        int(sol.iterations[0]),
        str(sol.status[0]),
    )


def calibrated_intensity(
    cfg: SimConfig, fit: CalibrationResult, modes: Sequence[int], device: str = "cpu"
) -> torch.Tensor:
    """The model intensities (B, L, N, N) float64 of a calibration's fitted frames."""
    f64 = torch.float64
    with torch.no_grad():
        engine = ZWFSModel(cfg.model_copy(update={"precision": "complex128"}), device)
        basis = torch.as_tensor(zernike_basis(list(modes), cfg.pupil.npix), dtype=f64)

        def t(x: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(x, dtype=f64, device=device)

        return system_intensity(engine, basis.to(device), t(fit.coeffs_nm), t(fit.system),
                                t(fit.log_flux))  # fmt: skip


def save_calibration(fit: CalibrationResult, path: str | os.PathLike, **info: Any) -> Path:
    """Write the fitted system as JSON ({"system": {field: value}, ...}), atomically."""
    body = {
        "system": dict(zip(SYSTEM_FIELDS, (float(x) for x in fit.system), strict=True)),
        "units": dict(zip(SYSTEM_FIELDS, SYSTEM_UNITS, strict=True)),
        "misfit_deviance_per_pixel": fit.misfit,
        "iterations": fit.iterations,
        "status": fit.status,
        **info,
    }
    return write_json_atomic(path, body)


def load_calibration(path: str | os.PathLike) -> tuple[float, ...]:
    """The system vector (`SYSTEM_FIELDS`) of a `save_calibration` file."""
    p = Path(path)
    try:
        system = json.loads(p.read_text())["system"]
        return tuple(float(system[k]) for k in SYSTEM_FIELDS)
    except FileNotFoundError:
        raise CalibrationFileError(
            f"no calibration file at {p} (recon calibrate makes one)"
        ) from None
    except (ValueError, KeyError, TypeError) as err:
        raise CalibrationFileError(
            f"{p} is not a calibration file (needs system: {', '.join(SYSTEM_FIELDS)}): {err}"
        ) from None
