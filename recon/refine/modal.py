"""Modal refinement: Noll coefficients fitted to the frames, each sample on its own.

Levenberg-Marquardt (`recon.refine.solver`) on the deviance by Fisher scoring: the
residual weighted at the model's intensity, the J-column Jacobian in closed form
(`FrameModel.modal_jacobian`, the dot through its low-rank terms), Marquardt scaling.
Fields, residuals and the Jacobian are in the model's dtype; J^T J, J^T r, the damped
solve and the coefficients are float64 (a float32 model puts the fixed point within
~1e-4 nm of the float64 one).
"""

from __future__ import annotations

import torch

from common.hardware import float32_matmul
from recon.refine.forward import FrameModel, Linearisation
from recon.refine.noise import NoiseModel, summed_deviance
from recon.refine.report import RefineReport, fit_report
from recon.refine.solver import Damping, TimedProblem, levenberg_marquardt

__all__ = ["MODAL_MAX_ITER", "REUSE_NM", "refine_modal"]

REUSE_NM = 0.1
"""A modal fit keeps a sample's J^T W J while the sample stays within this [nm RMS over
the modes] of where it was built: the fit's last iteration then costs an adjoint pass
instead of a Jacobian. At 0.1 nm `recon bench-refine` keeps the iterations, converged
fraction and residuals (median 2e-5 nm); at 1 nm a few far samples (500 nm RMS, weak
directions) stop 0.02 nm short: a modified Newton step's contraction is poor there."""

MODAL_MAX_ITER = 100
"""Gauss-Newton steps at most per modal fit. Far starts at 400-500 nm RMS converge in up
to 86 (200 FITS frames at 1e7 photons, scripts/lab_check.py --seed 2; 200 steps gain
nothing); at 40, those fits ended poor and restarted (32 of 600 frames restarted against
28). Fits that cannot converge stop earlier on their own (stalled, or model mismatch:
modes + 20 nm beyond them took the same 6 steps median at 40 and at 100)."""


class _ModalProblem:
    """The `recon.refine.solver.Problem` of coefficients (B, J) [nm RMS]."""

    def __init__(
        self,
        model: FrameModel,
        frames: torch.Tensor,
        basis: torch.Tensor,
        noise: NoiseModel,
        amplitude: torch.Tensor | None,
        chunk: int = 0,
    ) -> None:
        self.model, self.frames, self.basis, self.noise = model, frames, basis, noise
        self.amplitude, self.chunk = amplitude, chunk
        self.y_fit = noise.clamped_frames(frames)  # the residual that is the deviance's gradient
        n, n_modes = frames.shape[0], basis.shape[0]
        f64, dev = torch.float64, frames.device
        self._kept_h = torch.zeros(n, n_modes, n_modes, dtype=f64, device=dev)  # J^T W J
        self._kept_at = torch.full((n, n_modes), float("nan"), dtype=f64, device=dev)

    def evaluate(self, c: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        model = self.model
        opd = torch.einsum("bj,jhw->bhw", c.to(model.dtype), self.basis)
        lin = model.linearise(opd, None if self.amplitude is None else self.amplitude[idx])
        cost = summed_deviance(self.noise, lin.intensity, self.frames[idx])
        return cost, (lin.e_in, lin.e_out, lin.intensity)

    def gauss_newton(self, c: torch.Tensor, state: tuple, idx: torch.Tensor) -> tuple:
        """(J^T W J (b, J, J), J^T W r (b, J, 1), the diagonal) in float64, `chunk`
        samples at a time (0: all). A sample within `REUSE_NM` of where its J^T W J was
        last built keeps it and gets the exact gradient through the adjoint instead (the
        end game: a modified Newton step, its fixed point unchanged)."""
        lin = Linearisation(*state)
        w = self.noise.weights(lin.intensity)  # Fisher scoring: the weights at the model
        r = (lin.intensity - self.y_fit[idx]) * w
        moved = (c - self._kept_at[idx]).square().mean(1).sqrt()  # NaN: never built
        reuse = moved < REUSE_NM
        h = self._kept_h[idx]
        g = torch.empty(len(idx), h.shape[-1], 1, dtype=h.dtype, device=h.device)
        fresh = torch.nonzero(~reuse).flatten()
        size = self.chunk or max(len(fresh), 1)
        for a in range(0, len(fresh), size):
            rows = fresh[a : a + size]
            h[rows], g[rows] = self._normal_equations(lin[rows], w[rows], r[rows])
        self._kept_h[idx[fresh]], self._kept_at[idx[fresh]] = h[fresh], c[fresh]
        kept = torch.nonzero(reuse).flatten()
        if len(kept):
            g_kept = self.model.modal_vjp(lin[kept], r[kept] * w[kept], self.basis)
            g[kept] = g_kept.to(h.dtype)[..., None]
        diag = torch.diagonal(h, dim1=1, dim2=2)
        return h, g, diag.clamp(min=1e-12 * float(diag.max()))

    def _normal_equations(
        self, lin: Linearisation, w: torch.Tensor, r: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """J^T W J (b, J, J) and J^T W r (b, J, 1), float64, of weights w and weighted
        residuals r (b, L, N, N)."""
        n_wl = r.shape[1]
        # weighted Jacobian per wavelength (b, L, J, N^2): the jvp's own storage order
        jac = self.model.modal_jacobian(lin, self.basis, weights=w).transpose(1, 2)
        jac = jac.flatten(3).flatten(0, 1)  # (b L, J, N^2)
        f64 = torch.float64
        h = (jac @ jac.transpose(1, 2)).unflatten(0, (-1, n_wl)).sum(1).to(f64)  # (b, J, J)
        g = (jac @ r.flatten(2).flatten(0, 1)[..., None]).unflatten(0, (-1, n_wl))
        return h, g.sum(1).to(f64)  # (b, J, 1)

    def step(self, system: tuple, damping: torch.Tensor, sub: torch.Tensor) -> torch.Tensor:
        h, g, diag = system
        eye = torch.eye(h.shape[-1], dtype=h.dtype, device=h.device)
        a = h[sub] + damping[:, None, None] * torch.diag_embed(diag[sub]) + 1e-14 * eye
        return -torch.linalg.solve(a, g[sub])[..., 0]

    def step_size(self, step: torch.Tensor) -> torch.Tensor:
        return step.square().mean(1).sqrt()  # RMS over the unit-RMS modes [nm RMS]


def refine_modal(
    model: FrameModel,
    frames: torch.Tensor,
    coeffs0_nm: torch.Tensor,
    basis: torch.Tensor,
    noise: NoiseModel | None = None,
    max_iter: int = MODAL_MAX_ITER,
    step_tol_nm: float = 1e-2,
    damping: float = 1e-3,
    stall_tol: float = 1e-4,
    judge: NoiseModel | None = None,
    matmul_precision: str = "highest",
    amplitude: torch.Tensor | None = None,
    timings: dict[str, float] | None = None,
    chunk: int = 0,
) -> tuple[torch.Tensor, RefineReport]:
    """Levenberg-Marquardt over modal coefficients, each sample on its own.

    Args:
        model: the engine. frames: (B, L, N, N) measured, normalised.
        coeffs0_nm: (B, J) start [nm RMS]; basis: (J, N, N) unit-RMS modes (model dtype).
        noise: the weights' noise model; None: least squares.
        max_iter: Gauss-Newton steps at most per sample.
        step_tol_nm: converged when the accepted step's RMS over modes is below this
            [nm RMS] (or no damping lowers the cost any more).
        damping: initial Marquardt lambda (relative to diag(J^T J)).
        stall_tol: also stop a sample whose cost fell by less than this fraction in an
            iteration: converged when that fall is under one deviance unit with noise
            (the rest is below the noise), else stalled (a slow valley).
        judge: the noise model `good_fit` judges by (default: `noise`; give the frames'
            own when fitting noisy frames unweighted).
        matmul_precision: float32 matrix products inside the fit (`HardwarePlan.
            refine_matmul`; "highest": no TF32, whatever the caller allowed outside).
        amplitude: (B, N, N) each sample's measured pupil amplitude
            (`FrameModel.measured_amplitude`); None: the model's system.
        timings: when given, the seconds of the fit's parts and its cost evaluations
            are added to it (`TimedProblem`).
        chunk: samples per Jacobian product (`HardwarePlan.refine_chunk`; 0: all).

    Returns:
        coefficients (B, J) [nm RMS] (float64) and the `RefineReport`.
    """
    frames = frames.to(model.dtype)
    noise = noise if noise is not None else NoiseModel(None)
    settings = Damping(
        max_iter, step_tol_nm, stall_tol, 1.0 if noise.noisy else 0.0, initial=damping
    )
    with float32_matmul(matmul_precision):
        problem = _ModalProblem(model, frames, basis, noise, amplitude, chunk)
        if timings is not None:
            problem = TimedProblem(problem, timings, frames.device)
        sol = levenberg_marquardt(problem, coeffs0_nm.to(torch.float64), settings)
    intensity = sol.state[2]
    return sol.x, fit_report(sol, sol.cost, intensity, frames, judge or noise)
