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

__all__ = ["MODAL_MAX_ITER", "refine_modal"]

MODAL_MAX_ITER = 40
"""Gauss-Newton steps at most per modal fit (far starts at 400-500 nm converge in 40,
not all in 15)."""


class _ModalProblem:
    """The `recon.refine.solver.Problem` of coefficients (B, J) [nm RMS]."""

    def __init__(
        self,
        model: FrameModel,
        frames: torch.Tensor,
        basis: torch.Tensor,
        noise: NoiseModel,
        amplitude: torch.Tensor | None,
    ) -> None:
        self.model, self.frames, self.basis, self.noise = model, frames, basis, noise
        self.amplitude = amplitude
        self.y_fit = noise.clamped_frames(frames)  # the residual that is the deviance's gradient

    def evaluate(self, c: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        model = self.model
        opd = torch.einsum("bj,jhw->bhw", c.to(model.dtype), self.basis)
        lin = model.linearise(opd, None if self.amplitude is None else self.amplitude[idx])
        cost = summed_deviance(self.noise, lin.intensity, self.frames[idx])
        return cost, (lin.e_in, lin.e_out, lin.intensity)

    def gauss_newton(self, c: torch.Tensor, state: tuple, idx: torch.Tensor) -> tuple:
        """(J^T W J (b, J, J), J^T W r (b, J, 1), the diagonal) in float64."""
        lin = Linearisation(*state)
        w = self.noise.weights(lin.intensity)  # Fisher scoring: the weights at the model
        r = (lin.intensity - self.y_fit[idx]) * w
        n_wl = r.shape[1]
        # weighted Jacobian per wavelength (b, L, J, N^2): the jvp's own storage order
        jac = self.model.modal_jacobian(lin, self.basis, weights=w).transpose(1, 2)
        jac = jac.flatten(3).flatten(0, 1)  # (b L, J, N^2)
        f64 = torch.float64
        h = (jac @ jac.transpose(1, 2)).unflatten(0, (-1, n_wl)).sum(1).to(f64)  # (b, J, J)
        g = (jac @ r.flatten(2).flatten(0, 1)[..., None]).unflatten(0, (-1, n_wl))
        g = g.sum(1).to(f64)  # (b, J, 1)
        diag = torch.diagonal(h, dim1=1, dim2=2)
        return h, g, diag.clamp(min=1e-12 * float(diag.max()))

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

    Returns:
        coefficients (B, J) [nm RMS] (float64) and the `RefineReport`.
    """
    frames = frames.to(model.dtype)
    noise = noise if noise is not None else NoiseModel(None)
    settings = Damping(
        max_iter, step_tol_nm, stall_tol, 1.0 if noise.noisy else 0.0, initial=damping
    )
    with float32_matmul(matmul_precision):
        problem = _ModalProblem(model, frames, basis, noise, amplitude)
        if timings is not None:
            problem = TimedProblem(problem, timings, frames.device)
        sol = levenberg_marquardt(problem, coeffs0_nm.to(torch.float64), settings)
    intensity = sol.state[2]
    return sol.x, fit_report(sol, sol.cost, intensity, frames, judge or noise)
