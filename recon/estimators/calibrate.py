"""Self-calibration: the system's nuisance parameters fitted jointly with the OPD.

A lab never knows its dot diameter and depth, the pupil's position and size on the
detector, or each frame's flux exactly. `ParametricZWFS` is the engine of
`sim.zwfs.ZWFSModel` with these as differentiable inputs (torch, float64):

- dot diameter and depth as factors of the config's (``diameter_scale``, ``depth_scale``);
  the footprint is a smooth disk (a logistic edge 0.3 focal samples wide) instead of the
  sub-sampled one, so that it has a derivative in the diameter;
- pupil shift (x, y) [px] and scale (a factor of the radius): the illuminated pupil, a
  disk with a 1-px linear edge (the grey-pixel area to first order);
- per-frame flux: a log-factor on each (sample, wavelength) frame.

The OPD lives on the nominal grid in Noll modes. `calibrate` runs Levenberg-Marquardt
over everything at once (the Jacobian by `torch.func.jacfwd`, float64) on a set of
frames (unknown aberrations: self-calibration) and returns the fitted system, the
coefficients and the fluxes. With ``fit_system=False`` it fits OPD and flux only, with
the system held at the given values (the nominal or the exact model).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.errors import KnownError
from common.io import write_json_atomic
from recon.estimators.forward import NOMINAL_SYSTEM, SYSTEM_FIELDS, NoiseModel, shifted_pupil
from sim.config import SimConfig
from sim.mask import focal_coordinates
from sim.zernike import zernike_basis
from sim.zwfs import ZWFSModel

__all__ = [
    "SYSTEM_FIELDS",
    "CalibrationResult",
    "ParametricZWFS",
    "calibrate",
    "load_calibration",
    "save_calibration",
]


class CalibrationFileError(KnownError):
    """A calibration file that is missing or does not hold a system."""


NOMINAL = NOMINAL_SYSTEM  # (1, 1, 0, 0, 1), the entries as `SYSTEM_FIELDS`


class ParametricZWFS:
    """The ZWFS engine with the system's nuisance parameters as inputs (module docstring).

    Args:
        cfg: the nominal system (binning 1); modes: Noll indices of the OPD basis.
    """

    def __init__(self, cfg: SimConfig, modes: list[int]) -> None:
        if cfg.detector.binning != 1:
            raise ValueError("calibration needs detector.binning = 1")
        exact = cfg.model_copy(update={"precision": "complex128"})
        with torch.no_grad():
            engine = ZWFSModel(exact)
        self.cfg, self.modes = cfg, list(modes)
        self.op = engine.dot_operator  # v, v_t: the MFT matrices (fixed)
        f64 = torch.float64
        n = cfg.pupil.npix
        self.npix = n
        self.basis = torch.as_tensor(zernike_basis(self.modes, n), dtype=f64)
        self.k = engine.wavenumber_per_nm  # (L, 1, 1)
        self.wavelengths_nm = torch.tensor(cfg.wavelengths_um, dtype=f64) * 1e3
        q = cfg.focal.samples_per_lambda0_d
        u = focal_coordinates(cfg.focal_box_samples, q)
        self.u_pitch = float(u[1] - u[0])
        uu = torch.as_tensor(u, dtype=f64)
        self.uy, self.ux = torch.meshgrid(uu, uu, indexing="ij")  # [lambda0/D]
        keep = np.flatnonzero(u >= -1e-12 * np.abs(u).max())
        fold = np.where(np.abs(u[keep]) < 1e-12 * np.abs(u).max(), 1.0, 2.0)
        self.keep = torch.as_tensor(keep)
        self.fold = torch.as_tensor(fold[:, None] * fold[None, :], dtype=f64)
        ratio = cfg.mask.lambda0_um / np.asarray(cfg.wavelengths_um)
        self.mft_norm = torch.as_tensor((ratio / (n * q)) ** 2, dtype=f64)[:, None, None]
        self.mask = engine.mask.numpy()
        self.clear_mean = float(
            self._pupil(torch.tensor(NOMINAL, dtype=f64))[engine.mask].square().mean()
        )

    def _pupil(self, system: torch.Tensor) -> torch.Tensor:
        """Transmission (N, N) of the shifted, scaled pupil (1-px linear edge)."""
        return shifted_pupil(self.npix, system)

    def intensity(
        self, coeffs_nm: torch.Tensor, system: torch.Tensor, log_flux: torch.Tensor
    ) -> torch.Tensor:
        """Normalised intensities (B, L, N, N).

        Args:
            coeffs_nm: (B, J) [nm RMS]; system: (5,) as `SYSTEM_FIELDS`;
            log_flux: (B, L), each frame scaled by exp(log_flux).
        """
        op = self.op
        opd = torch.einsum("bj,jhw->bhw", coeffs_nm, self.basis)
        amp = self._pupil(system) / self.clear_mean**0.5
        phase = opd[:, None] * self.k  # (B, L, N, N)
        e = torch.stack((torch.cos(phase), torch.sin(phase)), dim=2) * amp
        radius = system[0] * self.cfg.mask.diameter_lambda0_d / 2
        fp = torch.sigmoid((radius - torch.hypot(self.ux, self.uy)) / (0.3 * self.u_pitch))
        w = (self.mft_norm * fp)[:, self.keep][:, :, self.keep] * self.fold  # (L, M', M')
        kernel = torch.cat((torch.cat((w, w), -1), torch.cat((w, w), -1)), -2)[:, None]
        theta = 2 * torch.pi * system[1] * self.cfg.mask.opd_depth_nm / self.wavelengths_nm
        cos, sin = torch.cos(theta), torch.sin(theta)
        b, n_l, _, n, _ = e.shape
        m = op.v.shape[-2]
        y = e.reshape(b, n_l, 2 * n, n) @ op.v_t[:, 0]
        focal = kernel * (op.v @ y.reshape(b, n_l, 2, n, m))  # (B, L, 2, 2M', 2M')
        mc, ms = (1 - cos)[:, None, None], sin[:, None, None]
        re = mc * focal[:, :, 0] + ms * focal[:, :, 1]  # (1 - e^{i theta}) x focal
        im = -ms * focal[:, :, 0] + mc * focal[:, :, 1]
        focal = torch.stack((re, im), dim=2)
        z = (focal.reshape(b, n_l, 2 * m, m) @ op.v[:, 0]).reshape(b, n_l, 2, m, n)
        out = e - op.v_t @ z
        return (out[:, :, 0].square() + out[:, :, 1].square()) * log_flux.exp()[..., None, None]


@dataclass
class CalibrationResult:
    """system (5,) as `SYSTEM_FIELDS`; coeffs_nm (B, J); log_flux (B, L); misfit; iterations."""

    system: np.ndarray
    coeffs_nm: np.ndarray
    log_flux: np.ndarray
    misfit: float
    iterations: int

    def opd_nm(self, model: ParametricZWFS) -> np.ndarray:
        """OPD maps (B, N, N) [nm] of the fitted coefficients."""
        return np.einsum("bj,jhw->bhw", self.coeffs_nm, model.basis.numpy())


# scales of the fitted unknowns, so that the damped normal equations are well balanced
_SYSTEM_UNIT = torch.tensor([0.01, 0.01, 0.1, 0.1, 0.01], dtype=torch.float64)
_COEFF_UNIT_NM = 10.0
_FLUX_UNIT = 0.01


def _jacobian(
    residual: Callable[[torch.Tensor], torch.Tensor],
    p: torch.Tensor,
    n_samples: int,
    n_modes: int,
    n_wavelengths: int,
    n_shared: int,
) -> torch.Tensor:
    """Dense Jacobian (R, P) by forward mode, one tangent per *kind* of parameter.

    p = [coefficients (B, J), log-fluxes (B, L), system (n_shared,)]. Sample i's frames
    depend only on its own J + L parameters and on the shared ones, so one tangent that
    moves parameter q of every sample at once gives column q of every sample's block:
    J + L + n_shared forward passes instead of P.
    """
    n_p = p.numel()
    b, n_j, n_l = n_samples, n_modes, n_wavelengths
    cols = torch.cat(
        (
            torch.arange(b * n_j).reshape(b, n_j),
            b * n_j + torch.arange(b * n_l).reshape(b, n_l),
        ),
        dim=1,
    )  # (B, J + L): each sample's parameter positions
    per_sample = n_j + n_l
    tangents = torch.zeros(per_sample + n_shared, n_p, dtype=p.dtype)
    for k in range(per_sample):
        tangents[k, cols[:, k]] = 1.0
    for k in range(n_shared):
        tangents[per_sample + k, n_p - n_shared + k] = 1.0
    out = torch.func.vmap(lambda t: torch.func.jvp(residual, (p,), (t,))[1])(tangents)
    rows = out.shape[1] // b
    jac = p.new_zeros(out.shape[1], n_p)
    for i in range(b):
        block = slice(i * rows, (i + 1) * rows)
        jac[block, cols[i]] = out[:per_sample, block].T
    if n_shared:
        jac[:, n_p - n_shared :] = out[per_sample:].T
    return jac


def calibrate(
    model: ParametricZWFS,
    frames: np.ndarray | torch.Tensor,
    coeffs0_nm: np.ndarray | torch.Tensor,
    system0: tuple[float, ...] = NOMINAL,
    fit_system: bool = True,
    noise: NoiseModel | None = None,
    fit_opd: bool = True,
    max_iter: int = 40,
    tol: float = 1e-10,
) -> CalibrationResult:
    """Joint Levenberg-Marquardt fit of the system, the OPD coefficients and the fluxes.

    Args:
        model: the parametric engine. frames: (B, L, N, N) measured, normalised.
        coeffs0_nm: (B, J) start [nm RMS] (e.g. a refinement with the nominal model), or
            with ``fit_opd=False`` the known aberrations (a DM poke sequence), held fixed.
        system0: start (or, with ``fit_system=False``, the fixed value) of the system.
        noise: weights (`NoiseModel`); None: least squares.
        fit_opd: False for a calibration set of known aberrations.
        max_iter: Jacobian evaluations; tol: stop when the cost falls by less than this
            fraction.
    """
    f64 = torch.float64
    y = torch.as_tensor(np.asarray(frames), dtype=f64)
    w = torch.ones_like(y) if noise is None or not noise.noisy else noise.variance(y).rsqrt()
    b, n_l = y.shape[:2]
    n_modes = len(model.modes)
    sys0 = torch.tensor(system0, dtype=f64)
    c0 = torch.as_tensor(np.asarray(coeffs0_nm), dtype=f64)

    n_fit = n_modes if fit_opd else 0  # fitted coefficients per sample

    def unpack(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c = p[: b * n_fit].reshape(b, n_fit) * _COEFF_UNIT_NM if fit_opd else c0
        flux = p[b * n_fit : b * (n_fit + n_l)].reshape(b, n_l) * _FLUX_UNIT
        s = sys0 + p[b * (n_fit + n_l) :] * _SYSTEM_UNIT if fit_system else sys0
        return c, s, flux

    def residual(p: torch.Tensor) -> torch.Tensor:
        c, s, flux = unpack(p)
        return ((model.intensity(c, s, flux) - y) * w).flatten()

    n_sys = len(SYSTEM_FIELDS) if fit_system else 0
    p = torch.cat(
        (
            c0.flatten()[: b * n_fit] / _COEFF_UNIT_NM,
            torch.zeros(b * n_l, dtype=f64),
            torch.zeros(n_sys, dtype=f64),
        )
    )
    r = residual(p)
    cost = float(r.square().sum())
    lam = 1e-3
    iterations = 0
    for _ in range(max_iter):
        iterations += 1
        jac = _jacobian(residual, p, b, n_fit, n_l, n_sys)  # (R, P)
        h, g = jac.T @ jac, jac.T @ r
        d = torch.diagonal(h).clamp(min=1e-12 * float(torch.diagonal(h).max()))
        improved = False
        for _try in range(10):
            step = -torch.linalg.solve(h + lam * torch.diag(d), g)
            r_new = residual(p + step)
            new_cost = float(r_new.square().sum())
            if new_cost <= cost:
                improved = True
                break
            lam *= 8
        if not improved:
            break
        p, r, old, cost = p + step, r_new, cost, new_cost
        lam = max(lam / 3, 1e-9)
        if old - cost < tol * old:
            break
    c, s, flux = unpack(p)
    return CalibrationResult(
        s.detach().numpy().copy(),
        c.detach().numpy(),
        flux.detach().numpy(),
        cost / r.numel(),
        iterations,
    )


def save_calibration(fit: CalibrationResult, path: str | os.PathLike, **info: Any) -> Path:
    """Write the fitted system as JSON ({"system": {field: value}, ...}), atomically."""
    body = {
        "system": dict(zip(SYSTEM_FIELDS, (float(x) for x in fit.system), strict=True)),
        "units": {"diameter_scale": "x config", "depth_scale": "x config",
                  "shift_x_px": "px", "shift_y_px": "px", "pupil_scale": "x radius"},
        "misfit_chi2_per_pixel": fit.misfit,
        "iterations": fit.iterations,
        **info,
    }  # fmt: skip
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
