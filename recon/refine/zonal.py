"""Zonal refinement: the OPD on every lit pupil pixel, with a smoothness prior.

Minimises 0.5 deviance + 0.5 alpha S(opd - opd0), S the sum of squared differences of
lit neighbours [nm^2] of the departure from the start (a prior on the OPD itself would
pull a 300 nm aberration tens of nm towards flat), alpha = `smoothness` x the mean
diagonal of J^T W J (so the prior's weight does not depend on the photon level). Each
Gauss-Newton step solves (J^T W J + alpha L + mu I) d = -grad by batched conjugate
gradients (J v and J^T u, never J), mu the solver's damping times that diagonal.

A pixel can settle in its second valley (`recon.refine.branches`); after the fit, each
pixel's best valley is searched with the rest held, and the samples with moved pixels
are refitted from their new maps with the prior centred there, the lower deviance kept:
at most `branch_passes` times.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from common.hardware import float32_matmul
from recon.refine.branches import pixel_branches
from recon.refine.forward import FrameModel, Linearisation
from recon.refine.noise import NoiseModel, summed_deviance
from recon.refine.report import RefineReport, fit_report
from recon.refine.solver import Damping, levenberg_marquardt

__all__ = ["BRANCH_PASSES", "ZONAL_MAX_ITER", "refine_zonal"]

ZONAL_MAX_ITER = 10
"""Gauss-Newton steps at most per zonal fit (noiseless fits converge in 6-10; at 1e7
photons 40 steps end where 8 do, within 0.95 of the zonal Cramer-Rao bound at 225-425 nm
against 0.96, measured; scripts/zonal_table.py)."""

ZONAL_NOISE_FLOOR = 0.01
"""With photon noise a zonal fit is converged once a step lowers its objective (half the
deviance plus the prior) by less than 0.1 % of it and by less than this per lit pixel.
At the noise the objective is about half the number of data pixels (8200 at 64 px and
4 wavelengths): the 0.1 % (~8) ends the fit, far below the objective's own spread from
one noise draw to another (~sqrt(8200) = 90); this floor (32 at 64 px) keeps a far fit
that slows down from being called converged. Without the rule 56 of 60 fits at 1e7
photons ran to the step limit, with the same residuals (docs/realism.md)."""

BRANCH_PASSES = 1
"""Searches of each pixel's best valley, each followed by a refit (module docstring).
Noiseless modes + 20 nm beyond them from their modal projection (64 px, 20 samples): 9
fits with pixels left in a second valley (1-2.6 nm RMS), none after one pass; a second
pass moved one pixel, on screens none."""


class _Smoothness:
    """S = the sum of squared differences of lit neighbours [nm^2], its gradient and the
    diagonal of its Hessian, with the lit pairs found once."""

    def __init__(self, lit: torch.Tensor, dtype: torch.dtype) -> None:
        self.mx = (lit[:, 1:] & lit[:, :-1]).to(dtype)  # (N, N - 1): lit pairs along x
        self.my = (lit[1:] & lit[:-1]).to(dtype)  # (N - 1, N): along y
        deg = F.pad(self.mx, (1, 0)) + F.pad(self.mx, (0, 1))
        self.degree = deg + F.pad(self.my, (0, 0, 1, 0)) + F.pad(self.my, (0, 0, 0, 1))

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """S (B,) and dS/dx (B, N, N) of maps x (B, N, N)."""
        gx = (x[:, :, 1:] - x[:, :, :-1]) * self.mx
        gy = (x[:, 1:] - x[:, :-1]) * self.my
        value = gx.square().flatten(1).sum(1) + gy.square().flatten(1).sum(1)
        grad = 2 * (F.pad(gx, (1, 0)) - F.pad(gx, (0, 1)) + F.pad(gy, (0, 0, 1, 0))
                    - F.pad(gy, (0, 0, 0, 1)))  # fmt: skip
        return value, grad


def _batch_dot(a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return (a * c).flatten(1).sum(1)


class _ZonalProblem:
    """The `recon.refine.solver.Problem` of OPD maps (B, N, N) [nm] on the lit pupil."""

    def __init__(
        self,
        model: FrameModel,
        frames: torch.Tensor,
        opd0: torch.Tensor,
        noise: NoiseModel,
        smoothness: float,
        cg_iter: int,
        amplitude: torch.Tensor | None,
        scale: float | None = None,
    ) -> None:
        self.model, self.frames, self.noise, self.cg_iter = model, frames, noise, cg_iter
        self.amplitude = amplitude
        self.y_fit = noise.clamped_frames(frames)  # the residual that is the deviance's gradient
        self.lit = torch.as_tensor(model.lit, device=model.device)
        self.litf = self.lit.to(model.dtype)
        self.smooth = _Smoothness(self.lit, model.dtype)
        self.ref = opd0  # the prior's mean: the start
        self.scale = self._scale(opd0) if scale is None else scale  # a refit keeps its fit's
        self.alpha = smoothness * self.scale

    def _scale(self, opd0: torch.Tensor) -> float:
        """The scale of diag(J^T W J): its local part, sum_l (2 k_l E . (i e))^2 w^2, the
        mean over the lit pixels and the batch."""
        model = self.model
        lin = model.linearise(opd0, self.amplitude)
        w = self.noise.weights(lin.intensity)
        e_in, e_out = lin.e_in, lin.e_out
        rot_dot = -e_out[:, :, 0] * e_in[:, :, 1] + e_out[:, :, 1] * e_in[:, :, 0]
        local = (2 * model.k * rot_dot * w).square().sum(1) * self.litf
        return float(local.sum() / (self.litf.sum() * opd0.shape[0]))

    def evaluate(self, x: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        lin = self.model.linearise(x, None if self.amplitude is None else self.amplitude[idx])
        s, _ = self.smooth(x - self.ref[idx])
        dev = summed_deviance(self.noise, lin.intensity, self.frames[idx])
        return 0.5 * dev + 0.5 * self.alpha * s.to(dev.dtype), (lin.e_in, lin.e_out, lin.intensity)

    def gauss_newton(self, x: torch.Tensor, state: tuple, idx: torch.Tensor) -> tuple:
        lin = Linearisation(*state)
        w = self.noise.weights(lin.intensity)  # Fisher scoring: the weights at the model
        r = (lin.intensity - self.y_fit[idx]) * w
        _, s_grad = self.smooth(x - self.ref[idx])
        grad = (self.model.vjp(lin, r * w) + 0.5 * self.alpha * s_grad) * self.litf
        return lin, w, grad, self.model.tangent_map(lin)

    def step(self, system: tuple, damping: torch.Tensor, sub: torch.Tensor) -> torch.Tensor:
        """(J^T W J + alpha/2 hess S + mu) d = -grad by conjugate gradients, preconditioned
        by the diagonal of the local part of J^T W J, of alpha/2 hess S and mu (Jacobi)."""
        lin, w, grad, jac = system
        lin, w, grad, jac = lin[sub], w[sub], grad[sub], jac[sub]
        mu = (damping * self.scale).to(grad.dtype)[:, None, None]
        w2 = w.square()
        diag = (jac.s_local.square() * w2).sum(1) + self.alpha * self.smooth.degree + mu
        precondition = torch.where(self.lit, diag, torch.ones_like(diag)).reciprocal()

        def hess(v: torch.Tensor) -> torch.Tensor:
            _, sv = self.smooth(v)
            return (self.model.vjp(lin, jac(v) * w2) + 0.5 * self.alpha * sv + mu * v) * self.litf

        d = torch.zeros_like(grad)
        res = -grad
        z = res * precondition
        p = z.clone()
        rz = _batch_dot(res, z)
        for _ in range(self.cg_iter):
            hp = hess(p)
            step = rz / _batch_dot(p, hp).clamp(min=1e-300)
            d = d + step[:, None, None] * p
            res = res - step[:, None, None] * hp
            z = res * precondition
            rz_new = _batch_dot(res, z)
            p = z + (rz_new / rz.clamp(min=1e-300))[:, None, None] * p
            rz = rz_new
        return d

    def step_size(self, step: torch.Tensor) -> torch.Tensor:
        return ((step.square() * self.litf).flatten(1).sum(1) / self.litf.sum()).sqrt()


def refine_zonal(
    model: FrameModel,
    frames: torch.Tensor,
    opd0_nm: torch.Tensor,
    noise: NoiseModel | None = None,
    smoothness: float = 1e-4,
    max_iter: int = ZONAL_MAX_ITER,
    cg_iter: int = 10,
    step_tol_nm: float = 1e-3,
    judge: NoiseModel | None = None,
    matmul_precision: str = "highest",
    amplitude: torch.Tensor | None = None,
    branch_passes: int = BRANCH_PASSES,
) -> tuple[torch.Tensor, RefineReport]:
    """Gauss-Newton-CG over the OPD on the lit pupil pixels (module docstring), from
    `opd0_nm` (B, N, N) [nm] (`RefinedEstimator` starts it from the modal fit), then
    `branch_passes` searches of each pixel's valley, each with a refit.

    Converged when an accepted step's RMS over the lit pixels is below `step_tol_nm`
    (or no damping lowers the objective); with photon noise also once a step lowers the
    objective by less than 0.1 % and by less than `ZONAL_NOISE_FLOOR` per lit pixel.
    ``judge``, ``matmul_precision``, ``amplitude``: as `refine_modal`; the branch search
    judges moves by ``judge`` (the frames' own noise) when given. Iterations: the
    Gauss-Newton steps of all the fits.

    Returns:
        OPD (B, N, N) [nm] (0 outside the lit pupil) and the `RefineReport`.
    """
    frames = frames.to(model.dtype)
    noise = noise if noise is not None else NoiseModel(None)
    stall, floor = (1e-3, ZONAL_NOISE_FLOOR * float(model.lit.sum())) if noise.noisy else (0, 0)
    settings = Damping(max_iter, step_tol_nm, stall_tol=stall, noise_floor=floor)
    with float32_matmul(matmul_precision):
        litf = torch.as_tensor(model.lit, device=model.device).to(model.dtype)
        x0 = opd0_nm.to(model.dtype) * litf
        problem = _ZonalProblem(model, frames, x0, noise, smoothness, cg_iter, amplitude)
        sol = levenberg_marquardt(problem, x0, settings)
        deviance = summed_deviance(noise, sol.state[2], frames)
        for _ in range(branch_passes):
            # judged by the frames' own noise: with weighted=False the fit's is unit weights
            moved, move = pixel_branches(model, frames, sol.x, judge or noise, amplitude)
            rows = torch.nonzero(move.flatten(1).any(1)).flatten()
            if rows.numel() == 0:
                break
            amp = None if amplitude is None else amplitude[rows]
            again = _ZonalProblem(
                model, frames[rows], moved[rows], noise, smoothness, cg_iter, amp, problem.scale
            )
            new = levenberg_marquardt(again, moved[rows], settings)
            new_deviance = summed_deviance(noise, new.state[2], frames[rows])
            sol.iterations[rows.cpu().numpy()] += new.iterations
            better = new_deviance < deviance[rows]
            keep = rows[better]
            sol.x[keep] = new.x[better]
            for kept, fresh in zip(sol.state, new.state, strict=True):
                kept[keep] = fresh[better]
            deviance[keep] = new_deviance[better]
            sol.status[keep.cpu().numpy()] = new.status[better.cpu().numpy()]
    return sol.x, fit_report(sol, deviance, sol.state[2], frames, judge or noise)
