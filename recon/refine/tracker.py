"""Frame-rate refinement: a fit that keeps its state from one frame to the next.

A lab loop sees one frame at a time, each a small drift from the last. `FrameTracker`
starts each frame's modal fit from the previous estimate and takes a set number of
Gauss-Newton steps on the deviance (Fisher scoring, the weights at the model), with no
damping and no line search: the start is one frame's drift from the answer, inside the
fit's basin by far. The weighted Jacobian of the current operating point and the
Cholesky factor of J^T W J are kept and refreshed every `refresh` frames (1: every
frame, an exact Gauss-Newton step; more: the classical AO reconstructor
(J^T W J)^-1 J^T W about a slowly moving operating point).
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

__all__ = ["FrameTracker", "TrackStep"]


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
        refresh: frames between refreshes of the linear reconstructor (1: every frame).
        reseed: refit a poor frame from the base estimator (else keep the warm result).
    """

    def __init__(self, refined, steps: int = 3, refresh: int = 1, reseed: bool = True) -> None:
        if steps < 1 or refresh < 1:
            raise ValueError(f"steps and refresh must be >= 1, got {steps}, {refresh}")
        self.refined, self.steps, self.refresh, self.reseed = refined, steps, refresh, reseed
        self.model = refined.model
        self.basis = refined.basis  # (J, N, N) model dtype
        self._coeffs: torch.Tensor | None = None  # (1, J) float64
        self._jac: torch.Tensor | None = None  # (J, L N N) weighted Jacobian, model dtype
        self._chol: torch.Tensor | None = None  # (J, J) Cholesky factor of J^T W J, float64
        self._since_refresh = 0

    def reset(self) -> None:
        """Forget the state: the next frame starts from the base estimator."""
        self._coeffs, self._jac, self._chol, self._since_refresh = None, None, None, 0

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
            for _ in range(self.steps):
                lin = self.model.linearise(self._opd(), amplitude)
                w = noise.weights(lin.intensity) if noise.noisy else None
                if self._jac is None or self._since_refresh >= self.refresh:
                    self._refresh(lin, w)
                r = lin.intensity - y_fit
                r = (r if w is None else r * w).flatten()
                g = (self._jac @ r).to(torch.float64)[:, None]  # J^T W r (J, 1)
                self._coeffs = self._coeffs - torch.cholesky_solve(g, self._chol)[:, 0][None]
            self._since_refresh += 1
            intensity = self.model.linearise(self._opd(), amplitude).intensity
        good = bool(good_fit(est.frame_noise, intensity, y)[0])
        if not good and self.reseed and not reseeded:
            self._cold(x, c_np)
            intensity = self.model.linearise(self._opd(), amplitude).intensity
            good, reseeded = bool(good_fit(est.frame_noise, intensity, y)[0]), True
        misfit = float(summed_deviance(est.frame_noise, intensity, y)[0]) / y[0].numel()
        opd = self._opd()[0].to(torch.float64).cpu().numpy()
        opd = np.where(est.mask, opd - opd[est.mask].mean(), 0.0)
        return TrackStep(self.coefficients_nm, opd, misfit, good, reseeded,
                         time.perf_counter() - t0)  # fmt: skip

    def _opd(self) -> torch.Tensor:
        return torch.einsum("bj,jhw->bhw", self._coeffs.to(self.basis.dtype), self.basis)

    def _refresh(self, lin, w: torch.Tensor | None) -> None:
        """Keep the weighted modal Jacobian (J, L N N) at `lin` (model dtype) and the
        Cholesky factor of J^T W J (float64): each step is then one matrix-vector product
        and a J x J triangular solve."""
        jac = self.model.modal_jacobian(lin, self.basis, weights=w)  # (1, J, L, N, N)
        self._jac = jac.reshape(jac.shape[1], -1)  # (J, L N N)
        h = (self._jac @ self._jac.T).to(torch.float64)
        h = h + 1e-12 * torch.diagonal(h).max() * torch.eye(len(h), dtype=h.dtype, device=h.device)
        self._chol = torch.linalg.cholesky(h)
        self._since_refresh = 0

    def _cold(self, x: np.ndarray, clear: np.ndarray | None) -> None:
        """The base estimator's estimate refined by a full modal fit (the first frame, or a
        reseed)."""
        est = self.refined
        opd = est.estimate(x, clear=clear)  # restarts included
        mask = torch.as_tensor(est.mask, device=self.model.device)
        opd_t = torch.as_tensor(opd, dtype=torch.float64, device=self.model.device)
        self._coeffs = opd_t[:, mask] @ est.projector  # (1, J)
        self._jac = self._chol = None
