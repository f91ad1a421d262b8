"""Frame-rate refinement: a fit that keeps its state from one frame to the next.

A lab loop sees one frame at a time, each a small drift from the last. `FrameTracker`
starts each frame's modal fit from the previous estimate and takes a set number of
Gauss-Newton steps on the deviance (Fisher scoring, the weights at the model), with no
damping and no line search: the start is one frame's drift from the answer, inside the
fit's basin by far. Each step's gradient J^T W r is exact, through the engine's adjoint
(one pass). The inverse of J^T W J is computed from the weighted modal Jacobian every
`refresh` frames (1: every frame, an exact Gauss-Newton first step) and, between, follows
the drift by BFGS secant updates from the steps themselves (Nocedal & Wright, ch. 6): a
quasi-Newton step whose fixed point is still the deviance's minimum, at a fraction of
the Jacobian's cost. The last frame's final linearisation is kept: the next frame's first
step starts there.
A frame that the fit leaves poor (`good_fit`) reseeds the track: the base estimator's
estimate and a full modal fit (`RefinedEstimator.refine`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from common.hardware import float32_matmul
from recon.estimators.base import as_clear, as_frames
from recon.refine.noise import good_fit, summed_deviance

__all__ = ["DEFAULT_REFRESH", "DEFAULT_STEPS", "FrameTracker", "TrackStep"]

DEFAULT_STEPS = 4  # Gauss-Newton steps per frame (docs/lab.md's table)
DEFAULT_REFRESH = 20  # frames between Jacobians; BFGS updates in between


@dataclass(frozen=True)
class TrackStep:
    """One frame's outcome: coefficients_nm (J,) [nm RMS, the estimator's modes]; opd_nm
    (N, N) [nm, piston-free on the pupil]; misfit: deviance per pixel after the steps;
    good_fit; reseeded: the frame restarted from the base estimator; latency_s [s]."""

    coefficients_nm: np.ndarray
    opd_nm: np.ndarray
    misfit: float
    good_fit: bool
    reseeded: bool
    latency_s: float


class FrameTracker:
    """Warm-started modal refinement, one frame per call (module docstring).

    Args:
        refined: a modal `RefinedEstimator` (engine, modes, noise, base estimator).
        steps: Gauss-Newton steps per frame.
        refresh: frames between Jacobians (1: every frame); BFGS updates in between.
        reseed: refit a poor frame from the base estimator (else keep the warm result).
    """

    def __init__(
        self,
        refined,
        steps: int = DEFAULT_STEPS,
        refresh: int = DEFAULT_REFRESH,
        reseed: bool = True,
    ) -> None:
        if steps < 1 or refresh < 1:
            raise ValueError(f"steps and refresh must be >= 1, got {steps}, {refresh}")
        self.refined, self.steps, self.refresh, self.reseed = refined, steps, refresh, reseed
        self.model = refined.model
        self.basis = refined.basis  # (J, N, N) model dtype
        self._coeffs: torch.Tensor | None = None  # (1, J) float64
        self._basis_flat = self.basis.reshape(len(self.basis), -1)  # (J, N N)
        self._kept: tuple | None = None  # (Linearisation, clear) at the last estimate
        self._inverse: torch.Tensor | None = None  # (J, J) float64: (J^T W J)^-1, BFGS-updated
        self._since_refresh = 0

    def reset(self) -> None:
        """Forget the state: the next frame starts from the base estimator."""
        self._coeffs, self._inverse, self._kept, self._since_refresh = None, None, None, 0

    @property
    def coefficients_nm(self) -> np.ndarray | None:
        """The last estimate (J,) [nm RMS], None before the first frame."""
        return None if self._coeffs is None else self._coeffs[0].cpu().numpy()

    @torch.no_grad()
    def __call__(
        self, frame: np.ndarray | torch.Tensor, clear: np.ndarray | None = None
    ) -> TrackStep:
        """Track one frame (L, N, N) or (1, L, N, N), clear-pupil normalised; `clear`: its
        clear-pupil frames (measured pupil amplitude), as for `RefinedEstimator`."""
        t0 = time.perf_counter()
        est = self.refined
        x = as_frames(frame, est.wavelengths_m, est.npix)
        if len(x) != 1:
            raise ValueError(f"the tracker takes one frame per call, got {len(x)}")
        c_np = None if clear is None else as_clear(clear, est.wavelengths_m, est.npix, 1)
        reseeded = self._coeffs is None
        if reseeded:
            self._cold(x, c_np)
        amplitude = None if c_np is None else self.model.measured_amplitude(c_np)
        y = self.model.tensor(x)
        noise = est.noise if est.noise is not None else est.frame_noise
        y_fit = noise.clamped_frames(y)
        with float32_matmul(est.matmul_precision):
            lin = self._kept_linearisation(c_np) or self.model.linearise(self._opd(), amplitude)
            last = None  # the previous step and gradient of this frame
            for _ in range(self.steps):
                w = noise.weights(lin.intensity) if noise.noisy else None
                if self._inverse is None or self._since_refresh >= self.refresh:
                    self._refresh(lin, w)
                    last = None
                r = lin.intensity - y_fit
                r = r if w is None else r * w.square()  # W r, W = 1 / sigma^2
                g = self._gradient(lin, r)  # J^T W r (J, 1), exact at this frame
                if last is not None:
                    self._secant_update(last[0], g - last[1])
                step = -(self._inverse @ g)
                last = (step, g)
                self._coeffs = self._coeffs + step[:, 0][None]
                lin = self.model.linearise(self._opd(), amplitude)
            self._since_refresh += 1
            dev = summed_deviance(est.frame_noise, lin.intensity, y)
            good = bool(good_fit(est.frame_noise, lin.intensity, y, deviance=dev)[0])
            if not good and self.reseed and not reseeded:
                self._cold(x, c_np)
                lin = self.model.linearise(self._opd(), amplitude)
                dev = summed_deviance(est.frame_noise, lin.intensity, y)
                good = bool(good_fit(est.frame_noise, lin.intensity, y, deviance=dev)[0])
                reseeded = True
        self._kept = (lin, c_np)  # the next frame's first step starts here
        misfit = float(dev[0]) / y[0].numel()
        opd = self._opd()[0].to(torch.float64).cpu().numpy()
        opd = np.where(est.mask, opd - opd[est.mask].mean(), 0.0)
        return TrackStep(self.coefficients_nm, opd, misfit, good, reseeded,
                         time.perf_counter() - t0)  # fmt: skip

    def _kept_linearisation(self, clear: np.ndarray | None):
        """The last frame's final linearisation, where this frame starts, if it was made
        with the same clear frame (pupil amplitude); else None."""
        if self._kept is None:
            return None
        lin, kept_clear = self._kept
        same = (clear is None and kept_clear is None) or (
            clear is not None and kept_clear is not None and np.array_equal(clear, kept_clear)
        )
        return lin if same else None

    def _opd(self) -> torch.Tensor:
        """The estimate's OPD (1, N, N) [nm] in the model dtype."""
        opd = self._coeffs.to(self.basis.dtype) @ self._basis_flat  # (1, N N)
        return opd.reshape(1, *self.basis.shape[1:])

    def _gradient(self, lin, weighted_residual: torch.Tensor) -> torch.Tensor:
        """J^T W r (J, 1) float64 at `lin`, through the engine's adjoint (`FrameModel.vjp`,
        one pass, no Jacobian): exact however old the kept J^T W J is, so a step's fixed
        point is the deviance's minimum whatever `refresh` is."""
        g = self.model.modal_vjp(lin, weighted_residual, self.basis)  # (1, J)
        return g[0].to(torch.float64)[:, None]

    def _refresh(self, lin, w: torch.Tensor | None) -> None:
        """Keep (J^T W J)^-1 (J, J) float64 at `lin`, from the weighted modal Jacobian:
        each step is then one adjoint pass and a J x J matrix-vector product."""
        jac = self.model.modal_jacobian(lin, self.basis, weights=w)  # (1, J, L, N, N)
        jac = jac.reshape(jac.shape[1], -1)  # (J, L N N)
        h = (jac @ jac.T).to(torch.float64)
        h = h + 1e-12 * torch.diagonal(h).max() * torch.eye(len(h), dtype=h.dtype, device=h.device)
        self._inverse = torch.cholesky_inverse(torch.linalg.cholesky(h))
        self._since_refresh = 0

    def _secant_update(self, step: torch.Tensor, change: torch.Tensor) -> None:
        """BFGS update of the kept inverse (J^T W J)^-1 with one step s (J, 1) and the
        gradient's change y across it (J, 1), when the curvature s^T y is positive: the
        inverse then follows the deviance's curvature as the operating point drifts away
        from the last Jacobian (Nocedal & Wright, eq. 6.17)."""
        curvature = float(step.T @ change)
        if curvature <= 1e-12 * float(step.norm() * change.norm()):
            return
        rho = 1.0 / curvature  # (I - rho s y^T) H (I - rho y s^T) + rho s s^T, expanded
        h_y = self._inverse @ change
        scale = rho * rho * float(change.T @ h_y) + rho
        self._inverse = self._inverse - rho * (step @ h_y.T + h_y @ step.T) + scale * step @ step.T

    def _cold(self, x: np.ndarray, clear: np.ndarray | None) -> None:
        """The base estimator's estimate refined by a full modal fit (the first frame, or a
        reseed)."""
        est = self.refined
        opd = est.estimate(x, clear=clear)  # restarts included
        mask = torch.as_tensor(est.mask, device=self.model.device)
        opd_t = torch.as_tensor(opd, dtype=torch.float64, device=self.model.device)
        self._coeffs = opd_t[:, mask] @ est.projector  # (1, J)
        self._inverse = self._kept = None
