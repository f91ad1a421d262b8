"""Hybrid reconstruction: any estimate refined by fitting the frames with the ZWFS engine.

Find the OPD with which the engine (`recon.estimators.forward.FrameModel`, float64)
reproduces the measured frames at every wavelength, starting from any estimate (a
network's, the analytic one, or zero):

- modal: Noll 2..J coefficients [nm RMS], batched Levenberg-Marquardt; the J-column
  Jacobian by forward mode, normal equations and solve in float64;
- zonal: the OPD on every lit pupil pixel [nm] with a smoothness prior
  (alpha x sum of squared neighbour differences), batched Gauss-Newton with
  conjugate gradients on the normal equations (J v and J^T u, never J itself).

Objective: the deviance (`NoiseModel.deviance`) over every pixel and wavelength: plain
least squares for noiseless frames, the shifted-Poisson likelihood of photon and read
noise when they carry a photon level, minimised by Fisher scoring (Gauss-Newton on the
residual weighted at the model's intensity). A fit whose deviance is too high for the
noise (`good_fit`) is refitted from the base's estimates of the rotated and mirrored
frames (`RefinedEstimator`, ``restarts``). Deterministic: no random numbers.

    est = RefinedEstimator(NetworkEstimator.from_checkpoint(run), cfg, mode="modal")
    opd_nm = est.estimate(frames)          # (B, H, W) nm, piston removed
    est.last_report.iterations, .misfit, .converged
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from common.hardware import float32_matmul, hardware_plan
from recon.estimators.base import Estimator, as_frames, remove_piston
from recon.estimators.forward import FrameModel, Linearisation, NoiseModel
from sim.config import SimConfig
from sim.zernike import zernike_basis

__all__ = [
    "RefineReport",
    "RefinedEstimator",
    "ZeroEstimator",
    "good_fit",
    "refine_modal",
    "refine_zonal",
]


MODAL_MAX_ITER = 40
"""Jacobian evaluations at most per modal fit (see `refine_modal`'s ``max_iter``)."""

NOISELESS_MISFIT = 1e-8
"""Largest misfit per pixel of a good fit to noiseless frames (an intensity residual of
1e-4 of the clear-pupil mean, RMS; a float32 engine reaches ~1e-14)."""


@dataclass
class RefineReport:
    """Per-sample outcome (B,) of a fit.

    Attributes:
        iterations: Jacobian evaluations (summed over the starts tried).
        misfit: final deviance per pixel (`NoiseModel.deviance`): ~1 for a fit down to the
            noise, ~0 for noiseless frames.
        converged: the solver stopped on its tolerance, not on ``max_iter``.
        good_fit: the misfit is what the noise gives at the truth (`good_fit`): False
            for a fit stuck in a local minimum, or frames the model cannot reproduce.
        starts: starts fitted (1, or more after restarts; `RefinedEstimator`).
    """

    iterations: np.ndarray
    misfit: np.ndarray
    converged: np.ndarray
    good_fit: np.ndarray
    starts: np.ndarray


def good_fit(
    noise: NoiseModel, intensity: torch.Tensor, frames: torch.Tensor, z_max: float = 2.0
) -> torch.Tensor:
    """Goodness of fit (B,) of model intensities (B, L, N, N) to measured frames.

    With a photon level: the summed deviance is at most z_max standard deviations above
    its mean at the truth (`NoiseModel.deviance_null`, pixels independent). Without:
    misfit <= `NOISELESS_MISFIT` per pixel. The null does not subtract the fitted
    parameters (35 modes: negligible; a zonal fit's pixels: lenient, z ~ -10 at 32 px).
    """
    dev = _deviance(noise, intensity, frames)
    n_px = frames[0].numel()
    if not noise.noisy:
        return dev <= NOISELESS_MISFIT * n_px
    mean, var = noise.deviance_null(intensity)
    return dev - mean.flatten(1).sum(1) <= z_max * var.flatten(1).sum(1).sqrt()


def _deviance(noise: NoiseModel, intensity: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """The fit's cost (B,): the summed deviance (`NoiseModel.deviance`), in float64."""
    d = noise.deviance(intensity.to(torch.float64), frames.to(torch.float64))
    return d.flatten(1).sum(1)


def _report(
    cost: torch.Tensor,
    intensity: torch.Tensor,
    frames: torch.Tensor,
    iterations: np.ndarray,
    done: torch.Tensor,
    judge: NoiseModel,
) -> RefineReport:
    """The report of one fit (one start each): misfit per pixel from the summed deviance
    `cost` (B,), and `good_fit` by `judge` at the final `intensity`."""
    good = good_fit(judge, intensity, frames)
    return RefineReport(
        iterations,
        (cost / frames[0].numel()).cpu().numpy(),
        done.cpu().numpy(),
        good.cpu().numpy(),
        np.ones(len(iterations), np.int64),
    )


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
) -> tuple[torch.Tensor, RefineReport]:
    """Levenberg-Marquardt over modal coefficients, each sample on its own.

    Fields, residuals and the Jacobian are in the model's dtype; J^T J, J^T r, the
    damped normal equations' solve and the coefficients are float64. A float32 model
    has intensities to ~1e-7 (relative), i.e. its fixed point is within ~1e-4 nm of
    the float64 one.

    Args:
        model: the engine. frames: (B, L, N, N) measured, normalised.
        coeffs0_nm: (B, J) start [nm RMS]; basis: (J, N, N) unit-RMS modes (model dtype).
        noise: the weights' noise model; None: least squares.
        max_iter: Jacobian evaluations at most per sample (a converging sample stops
            at its own tolerance; far starts need more: at 400-500 nm RMS, starts at half
            the truth converge in 40, not all in 15).
        step_tol_nm: converged when the accepted step's RMS over modes is below this
            [nm RMS]; also stops a sample whose cost no damping lowers any more.
        damping: initial Marquardt lambda (relative to diag(J^T J)).
        stall_tol: also stop a sample whose cost fell by less than this fraction in an
            iteration (a local minimum, or the noise floor): `misfit` tells which.
        judge: the noise model `good_fit` judges by (default: `noise`; give the frames'
            own when fitting noisy frames unweighted).
        matmul_precision: float32 matrix products inside the fit (`HardwarePlan.
            refine_matmul`; "highest": no TF32, whatever the caller allowed outside).

    Returns:
        coefficients (B, J) [nm RMS] (float64) and the `RefineReport`.
    """
    with float32_matmul(matmul_precision):
        return _refine_modal(
            model, frames, coeffs0_nm, basis, noise, max_iter, step_tol_nm, damping, stall_tol,
            judge,
        )  # fmt: skip


def _refine_modal(
    model: FrameModel,
    frames: torch.Tensor,
    coeffs0_nm: torch.Tensor,
    basis: torch.Tensor,
    noise: NoiseModel | None,
    max_iter: int,
    step_tol_nm: float,
    damping: float,
    stall_tol: float,
    judge: NoiseModel | None,
) -> tuple[torch.Tensor, RefineReport]:
    f64 = torch.float64
    frames = frames.to(model.dtype)
    noise = noise if noise is not None else NoiseModel(None)
    y_fit = noise.clamped_frames(frames)  # the residual that is the deviance's gradient
    c = coeffs0_nm.to(f64).clone()
    b, n_modes = c.shape
    n_wl = frames.shape[1]
    dev = c.device
    lam = torch.full((b,), damping, dtype=f64, device=dev)
    iters = np.zeros(b, dtype=np.int64)
    done = torch.zeros(b, dtype=torch.bool, device=dev)

    def evaluate(idx: torch.Tensor, coeffs: torch.Tensor) -> tuple[torch.Tensor, Linearisation]:
        lin = model.linearise(torch.einsum("bj,jhw->bhw", coeffs.to(model.dtype), basis))
        return _deviance(noise, lin.intensity, frames[idx]), lin

    cost, lin_all = evaluate(torch.arange(b, device=dev), c)
    e_in, e_out, inten = lin_all.e_in, lin_all.e_out, lin_all.intensity  # kept per sample
    diag_eye = torch.eye(n_modes, dtype=f64, device=dev)
    for _ in range(max_iter):
        idx = torch.nonzero(~done).flatten()
        if idx.numel() == 0:
            break
        iters[idx.cpu().numpy()] += 1
        ci = c[idx]
        cost_before = cost[idx].clone()
        lin = Linearisation(e_in[idx], e_out[idx], inten[idx])
        w = noise.weights(lin.intensity)  # Fisher scoring: the weights at the model
        r = (lin.intensity - y_fit[idx]) * w
        # weighted Jacobian per wavelength (b, L, J, N^2): the jvp's own storage order
        jac = model.modal_jacobian(lin, basis, weights=w).transpose(1, 2)
        jac = jac.flatten(3).flatten(0, 1)  # (b L, J, N^2)
        h = (jac @ jac.transpose(1, 2)).unflatten(0, (-1, n_wl)).sum(1).to(f64)  # (b, J, J)
        g = (jac @ r.flatten(2).flatten(0, 1)[..., None]).unflatten(0, (-1, n_wl))
        g = g.sum(1).to(f64)  # (b, J, 1)
        del jac
        diag = torch.diagonal(h, dim1=1, dim2=2)
        diag = diag.clamp(min=1e-12 * float(diag.max()))
        accepted = torch.zeros(idx.numel(), dtype=torch.bool, device=dev)
        step = torch.zeros_like(ci)
        for _try in range(8):  # raise lambda until the cost falls (per sample)
            sub = torch.nonzero(~accepted).flatten()
            if sub.numel() == 0:
                break
            a = h[sub] + lam[idx[sub]][:, None, None] * torch.diag_embed(diag[sub])
            delta = -torch.linalg.solve(a + 1e-14 * diag_eye, g[sub])[..., 0]
            new_cost, lin_new = evaluate(idx[sub], ci[sub] + delta)
            ok = new_cost <= cost[idx[sub]]
            good, where = sub[ok], idx[sub[ok]]
            step[good] = delta[ok]
            cost[where] = new_cost[ok]
            e_in[where], e_out[where] = lin_new.e_in[ok], lin_new.e_out[ok]
            inten[where] = lin_new.intensity[ok]
            accepted[good] = True
            lam[where] = (lam[where] / 3).clamp(min=1e-9)
            lam[idx[sub[~ok]]] *= 8
        c[idx] = ci + step
        small = step.square().mean(1).sqrt() < step_tol_nm
        stalled = cost[idx] > (1 - stall_tol) * cost_before  # a local minimum (or the noise)
        done[idx[small | stalled]] = True
    return c, _report(cost, inten, frames, iters, done, judge or noise)


def _smoothness(x: torch.Tensor, lit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of squared neighbour differences over lit pairs (B,) and its gradient (B, N, N)."""
    gx = (x[:, :, 1:] - x[:, :, :-1]) * (lit[:, 1:] & lit[:, :-1])
    gy = (x[:, 1:] - x[:, :-1]) * (lit[1:] & lit[:-1])
    value = gx.square().flatten(1).sum(1) + gy.square().flatten(1).sum(1)
    grad = torch.zeros_like(x)
    grad[:, :, 1:] += 2 * gx
    grad[:, :, :-1] -= 2 * gx
    grad[:, 1:] += 2 * gy
    grad[:, :-1] -= 2 * gy
    return value, grad


def refine_zonal(
    model: FrameModel,
    frames: torch.Tensor,
    opd0_nm: torch.Tensor,
    noise: NoiseModel | None = None,
    smoothness: float = 1e-4,
    max_iter: int = 15,
    cg_iter: int = 25,
    step_tol_nm: float = 1e-3,
    judge: NoiseModel | None = None,
    matmul_precision: str = "highest",
) -> tuple[torch.Tensor, RefineReport]:
    """Gauss-Newton-CG over the OPD on the lit pupil pixels, with a smoothness prior.

    Minimises 0.5 deviance + 0.5 alpha S(opd - opd0), S the sum of squared differences of
    lit neighbours [nm^2] of the departure from the start (a prior on the OPD itself
    would pull a 300 nm aberration tens of nm towards flat), alpha = `smoothness` x the
    mean diagonal of J^T W J (so the prior's weight does not depend on the photon level).
    `RefinedEstimator` starts it from the modal fit. Each outer iteration solves
    (J^T W J + alpha L + mu I) d = -grad by `cg_iter` batched CG steps and accepts d
    when the objective falls (else mu grows, a Levenberg-Marquardt safeguard).

    Returns:
        OPD (B, N, N) [nm] (0 outside the lit pupil) and the `RefineReport`.
        (``matmul_precision``: as `refine_modal`.)
    """
    with float32_matmul(matmul_precision):
        return _refine_zonal(
            model, frames, opd0_nm, noise, smoothness, max_iter, cg_iter, step_tol_nm, judge
        )


def _refine_zonal(
    model: FrameModel,
    frames: torch.Tensor,
    opd0_nm: torch.Tensor,
    noise: NoiseModel | None,
    smoothness: float,
    max_iter: int,
    cg_iter: int,
    step_tol_nm: float,
    judge: NoiseModel | None,
) -> tuple[torch.Tensor, RefineReport]:
    lit = torch.as_tensor(model.lit, device=model.device)
    litf = lit.to(model.dtype)
    frames = frames.to(model.dtype)
    noise = noise if noise is not None else NoiseModel(None)
    y_fit = noise.clamped_frames(frames)  # the residual that is the deviance's gradient
    x = opd0_nm.to(model.dtype) * litf
    ref = x.clone()  # the prior's mean: the start
    b = x.shape[0]
    # the scale of diag(J^T W J): its local part, sum_l (2 k_l E . (i e))^2 w^2, lit mean
    lin = model.linearise(x)
    w = noise.weights(lin.intensity)
    rot_dot = -lin.e_out[:, :, 0] * lin.e_in[:, :, 1] + lin.e_out[:, :, 1] * lin.e_in[:, :, 0]
    local = ((2 * model.k * rot_dot * w).square().sum(1) * litf).sum() / (litf.sum() * b)
    scale = float(local)
    alpha = smoothness * scale
    mu = torch.full((b,), 1e-3 * scale, dtype=model.dtype, device=x.device)

    def objective(opd: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, object, object]:
        lin = model.linearise(opd)
        s, s_grad = _smoothness(opd - ref[idx], lit)
        dev = _deviance(noise, lin.intensity, frames[idx]).to(opd.dtype)
        return 0.5 * dev + 0.5 * alpha * s, lin, s_grad

    def batch_dot(a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return (a * c).flatten(1).sum(1)

    all_idx = torch.arange(b, device=x.device)
    f, _, _ = objective(x, all_idx)
    iters = np.zeros(b, dtype=np.int64)
    done = torch.zeros(b, dtype=torch.bool, device=x.device)
    for _ in range(max_iter):
        idx = torch.nonzero(~done).flatten()
        if idx.numel() == 0:
            break
        iters[idx.cpu().numpy()] += 1
        xi = x[idx]
        fi, lin, s_grad = objective(xi, idx)
        wi = noise.weights(lin.intensity)  # Fisher scoring: the weights at the model
        r = (lin.intensity - y_fit[idx]) * wi
        grad = (model.vjp(lin, r * wi) + 0.5 * alpha * s_grad) * litf
        mui = mu[idx]

        def hess(v: torch.Tensor, lin=lin, wi=wi, mui=mui) -> torch.Tensor:
            jv = model.jvp(lin, v[:, None])[:, 0] * wi
            _, sv = _smoothness(v, lit)
            return (model.vjp(lin, jv * wi) + 0.5 * alpha * sv + mui[:, None, None] * v) * litf

        d = torch.zeros_like(xi)  # CG on H d = -grad
        res = -grad
        p = res.clone()
        rr = batch_dot(res, res)
        for _k in range(cg_iter):
            hp = hess(p)
            step = rr / batch_dot(p, hp).clamp(min=1e-300)
            d = d + step[:, None, None] * p
            res = res - step[:, None, None] * hp
            rr_new = batch_dot(res, res)
            p = res + (rr_new / rr.clamp(min=1e-300))[:, None, None] * p
            rr = rr_new
        f_new, _, _ = objective(xi + d, idx)
        ok = f_new <= fi
        x[idx[ok]] = xi[ok] + d[ok]
        f[idx[ok]] = f_new[ok]
        mu[idx[ok]] = mui[ok] / 3
        mu[idx[~ok]] = mui[~ok] * 10
        d_rms = (d.square() * litf).flatten(1).sum(1) / litf.sum()
        small = ok & (d_rms.sqrt() < step_tol_nm)
        done[idx[small]] = True
    inten = model.intensity(x)
    return x, _report(_deviance(noise, inten, frames), inten, frames, iters, done, judge or noise)


_SYMMETRIES = [(k, t) for t in (False, True) for k in range(4)]
"""The square grid's 8 symmetries: k quarter turns, then a transpose or not; identity first."""


def _transform(a: np.ndarray, k: int, transpose: bool) -> np.ndarray:
    """Maps (..., N, N) turned by k quarter turns, then transposed."""
    a = np.rot90(a, k, axes=(-2, -1))
    return a.swapaxes(-1, -2) if transpose else a


def _untransform(a: np.ndarray, k: int, transpose: bool) -> np.ndarray:
    """The inverse of `_transform`."""
    a = a.swapaxes(-1, -2) if transpose else a
    return np.rot90(a, -k, axes=(-2, -1))


class ZeroEstimator:
    """The flat start: OPD = 0 for every frame (the refinement's own capture range)."""

    def __init__(self, cfg: SimConfig) -> None:
        model_mask = np.asarray(zernike_basis([1], cfg.pupil.npix)[0] != 0)
        self.name = "zero start"
        self.wavelengths_m = list(cfg.wavelengths_m)
        self.npix = cfg.pupil.npix
        self.mask = model_mask

    def estimate(
        self, intensities: np.ndarray | torch.Tensor, wavelengths_m: Sequence[float] | None = None
    ) -> np.ndarray:
        """Zeros (B, H, W) [nm] for frames (B, L, H, W) or (L, H, W)."""
        x = as_frames(intensities, self.wavelengths_m, self.npix, wavelengths_m)
        return np.zeros((x.shape[0], self.npix, self.npix), dtype=np.float32)


class RefinedEstimator:
    """`base`'s estimate refined by fitting the frames with the engine (an `Estimator`).

    Args:
        base: any `Estimator` (network, analytic, `ZeroEstimator`): the start.
        cfg: the system the frames come from (a dataset's ``config``): engine, modes
            (Noll 2..J of ``aberration``), and the noise weights (``detector``).
        mode: ``"modal"`` (Levenberg-Marquardt) or ``"zonal"`` (the modal fit, then the
            pixels by Gauss-Newton-CG: for aberrations outside the modes).
        noll_max: highest Noll mode of the modal fit (default: the config's).
        weighted: weight by the config's photon level when it has one.
        device, max_iter, smoothness: solver settings (`refine_modal`, `refine_zonal`).
        batch_size: samples per fit. dtype: the engine's fields and Jacobians; None: the
            device's `HardwarePlan.refine_dtype` (float32: twice as fast on a CPU, far more
            on a consumer GPU; the solve stays float64, see `refine_modal`).
        system: a calibrated system (`recon.estimators.calibrate`, entries as
            `SYSTEM_FIELDS`): dot diameter and depth, pupil shift and scale; None: nominal.
        restarts: at most this many more starts for a sample whose fit is poor
            (`good_fit`): the base's estimates of the frames rotated and mirrored (the
            pupil and dot are symmetric under the 8 rotations and mirrors of the square
            grid, so each gives another start for the same OPD); the lowest misfit wins.
            0: a single start.
    """

    def __init__(
        self,
        base: Estimator,
        cfg: SimConfig,
        mode: str = "modal",
        noll_max: int | None = None,
        weighted: bool = True,
        device: str | torch.device = "cpu",
        max_iter: int | None = None,
        smoothness: float = 1e-4,
        batch_size: int = 32,
        dtype: torch.dtype | None = None,
        system: Sequence[float] | np.ndarray | None = None,
        restarts: int = 7,
    ) -> None:
        if mode not in ("modal", "zonal"):
            raise ValueError(f"refine mode must be 'modal' or 'zonal', got {mode!r}")
        if base.npix != cfg.pupil.npix:
            raise ValueError(f"{base.name} works at {base.npix} px, the system at {cfg.pupil.npix}")
        self.base, self.cfg, self.mode = base, cfg, mode
        plan = hardware_plan(device)
        self.matmul_precision = plan.refine_matmul
        self.model = FrameModel(cfg, device, dtype or plan.refine_torch_dtype, system)
        self.noise = self.model.noise() if weighted else None
        self._judge = self.model.noise()  # good_fit: the frames' own noise, weighted or not
        j_max = cfg.aberration.noll_max if noll_max is None else int(noll_max)
        self.modes = list(range(2, j_max + 1))
        basis = torch.as_tensor(zernike_basis(self.modes, cfg.pupil.npix), device=self.model.device)
        self.basis = basis.to(self.model.dtype)
        mask = torch.as_tensor(self.model.mask, device=self.model.device)
        self.projector = torch.linalg.pinv(basis[:, mask])  # (P, J) float64 least squares
        self._mask_t = mask
        default_iter = MODAL_MAX_ITER if mode == "modal" else 15
        self.max_iter = max_iter if max_iter is not None else default_iter
        self.smoothness = smoothness
        self.batch_size = batch_size
        self.restarts = min(max(int(restarts), 0), len(_SYMMETRIES) - 1)
        self.name = f"{base.name} + refine" + ("" if mode == "modal" else " (zonal)")
        self.wavelengths_m = list(cfg.wavelengths_m)
        self.npix = cfg.pupil.npix
        self.mask = self.model.mask
        self.last_report: RefineReport | None = None

    def estimate(
        self, intensities: np.ndarray | torch.Tensor, wavelengths_m: Sequence[float] | None = None
    ) -> np.ndarray:
        """OPD (B, H, W) [nm] float32, piston removed; `last_report` holds the fit's outcome."""
        x = as_frames(intensities, self.wavelengths_m, self.npix, wavelengths_m)
        start = self._start(x, (0, False))
        opd, rep = self._refine_batches(x, start, "modal")
        tried = [start]  # (B, N, N) each; NaN: not tried for that sample
        for symmetry in _SYMMETRIES[1 : 1 + self.restarts]:
            poor = np.nonzero(~rep.good_fit)[0]
            if poor.size == 0:
                break
            alt = self._start(x[poor], symmetry)
            new = np.ones(poor.size, dtype=bool)  # an equivariant base gives nothing new
            for earlier in tried:
                d = np.sqrt(np.mean((alt - earlier[poor])[:, self.mask] ** 2, axis=1))
                new &= ~(d <= 1.0)  # within 1 nm RMS of a start already fitted (NaN: not)
            full = np.full_like(start, np.nan)
            full[poor] = alt
            tried.append(full)
            poor, alt = poor[new], alt[new]
            if poor.size == 0:
                continue
            opd_alt, rep_alt = self._refine_batches(x[poor], alt, "modal")
            rep.starts[poor] += 1
            rep.iterations[poor] += rep_alt.iterations
            better = rep_alt.misfit < rep.misfit[poor]
            opd[poor[better]] = opd_alt[better]
            for key in ("misfit", "converged", "good_fit"):
                getattr(rep, key)[poor[better]] = getattr(rep_alt, key)[better]
        if self.mode == "zonal":  # the pixels polish the modal fit (a local method)
            opd, rep_z = self._refine_batches(x, opd, "zonal")
            rep.iterations += rep_z.iterations
            rep.misfit, rep.converged, rep.good_fit = rep_z.misfit, rep_z.converged, rep_z.good_fit
        self.last_report = rep
        return np.where(self.model.lit, remove_piston(opd, self.mask), 0.0).astype(np.float32)

    def _start(self, frames: np.ndarray, symmetry: tuple[int, bool]) -> np.ndarray:
        """The base's estimate (B, N, N) [nm] of frames seen rotated by k x 90 degrees (and
        transposed), mapped back: the same OPD for a symmetric system."""
        turned = np.ascontiguousarray(_transform(frames, *symmetry))
        start = self.base.estimate(turned, wavelengths_m=self.wavelengths_m)
        if start.shape != (frames.shape[0], self.npix, self.npix):
            raise ValueError(
                f"{self.base.name} returned {start.shape}, not {frames.shape[:1]} maps"
            )
        return np.ascontiguousarray(_untransform(start, *symmetry))

    def _refine_batches(
        self, frames: np.ndarray, start: np.ndarray, mode: str
    ) -> tuple[np.ndarray, RefineReport]:
        """`refine` over batches of `batch_size`: OPD (B, N, N) [nm] and the joined report."""
        outs, reports = [], []
        for a in range(0, frames.shape[0], self.batch_size):
            sl = slice(a, a + self.batch_size)
            opd, rep = self.refine(frames[sl], start[sl], mode)
            outs.append(opd)
            reports.append(rep)
        joined = RefineReport(
            *(
                np.concatenate([getattr(r, k) for r in reports])
                for k in RefineReport.__annotations__
            )
        )
        return np.concatenate(outs), joined

    @torch.no_grad()
    def refine(
        self, frames: np.ndarray, start_nm: np.ndarray, mode: str | None = None
    ) -> tuple[np.ndarray, RefineReport]:
        """One fit of starts (B, N, N) [nm] to frames (B, L, N, N) in the engine's order
        (``mode``: the estimator's by default; no restarts, no modal stage)."""
        mode = mode or self.mode
        y = self.model.tensor(frames)
        s = torch.as_tensor(start_nm, dtype=torch.float64, device=self.model.device)
        if mode == "modal":
            c0 = s[:, self._mask_t] @ self.projector  # (B, P) -> (B, J)
            max_iter = self.max_iter if self.mode == "modal" else MODAL_MAX_ITER
            c, rep = refine_modal(
                self.model, y, c0, self.basis, self.noise, max_iter, judge=self._judge,
                matmul_precision=self.matmul_precision,
            )  # fmt: skip
            opd = torch.einsum("bj,jhw->bhw", c, self.basis.to(torch.float64))
        else:
            opd, rep = refine_zonal(
                self.model,
                y,
                s,
                self.noise,
                self.smoothness,
                max_iter=self.max_iter,
                judge=self._judge,
                matmul_precision=self.matmul_precision,
            )
        return opd.cpu().numpy(), rep
