"""Hybrid reconstruction: any estimate refined by fitting the frames with the engine.

    est = RefinedEstimator(NetworkEstimator.from_checkpoint(run), cfg, mode="modal")
    opd_nm = est.estimate(frames)          # (B, H, W) nm, piston removed
    est.last_report.status, .misfit, .iterations, .counts()

The base estimator gives the basin, the fit (`refine_modal`, then `refine_zonal` from
that fit and from the base's map in zonal mode) the precision. The first start is the
per-pixel median of the base's estimates of the turned and mirrored frames
(`recon.refine.symmetry`: the same OPD seen 8 ways, 4 on a hexagonal pupil; a
network's errors differ between them, the median is 10-20 % closer); a fit whose
deviance is too high for the noise (`good_fit`) is refitted from each view's own
estimate; the lowest misfit wins. Deterministic: no random numbers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

from common.hardware import hardware_plan
from data.schema import pupil_mask
from recon.estimators.base import (
    Estimator,
    as_clear,
    as_frames,
    needs_clear,
    remove_piston,
    run_estimate,
)
from recon.estimators.network import NetworkEstimator
from recon.refine.forward import FrameModel
from recon.refine.modal import MODAL_MAX_ITER, refine_modal
from recon.refine.noise import NoiseModel
from recon.refine.noise_estimate import NoiseEstimate, estimate_noise
from recon.refine.report import RefineReport
from recon.refine.symmetry import pupil_symmetries, transform, untransform
from recon.refine.zonal import ZONAL_MAX_ITER, refine_zonal
from sim.config import SimConfig
from sim.pupil import pupil_transmission
from sim.segments import segment_fit_basis, segment_means_weights
from sim.zernike import zernike_basis

__all__ = ["SAME_NM", "RefinedEstimator", "ZeroEstimator"]

SAME_NM = 1.0
"""Two starts (or two fits) closer than this [nm RMS over the pupil] are the same."""


class ZeroEstimator:
    """The flat start: OPD = 0 for every frame (the refinement's own capture range)."""

    def __init__(self, cfg: SimConfig) -> None:
        self.name = "zero start"
        self.wavelengths_m = list(cfg.wavelengths_m)
        self.npix = cfg.pupil.npix
        self.mask = pupil_mask(pupil_transmission(cfg.pupil))

    def estimate(
        self,
        intensities: np.ndarray | torch.Tensor,
        wavelengths_m: Sequence[float] | None = None,
        clear: np.ndarray | torch.Tensor | None = None,
    ) -> np.ndarray:
        """Zeros (B, H, W) [nm] for frames (B, L, H, W) or (L, H, W)."""
        x = as_frames(intensities, self.wavelengths_m, self.npix, wavelengths_m)
        return np.zeros((x.shape[0], self.npix, self.npix), dtype=np.float32)


class RefinedEstimator:
    """`base`'s estimate refined by fitting the frames with the engine (an `Estimator`).

    Args:
        base: any `Estimator` (network, analytic, `ZeroEstimator`): the start.
        cfg: the system the frames come from (a dataset's ``config``): engine, modes
            (Noll 2..J of ``aberration``; on a segmented pupil each segment's piston,
            tip and tilt and the rest of Noll 2..J, `segment_fit_basis`), and the noise
            weights (``detector``).
        mode: ``"modal"`` (Levenberg-Marquardt) or ``"zonal"`` (the modal fit, then the
            pixels by Gauss-Newton-CG from it and, where that fit is poor, from the
            base's own map, the lower misfit kept: for aberrations outside the modes).
        noll_max: highest Noll mode of the modal fit (default: the config's).
        weighted: weight by the config's photon level when it has one.
        device, max_iter, smoothness: solver settings (`refine_modal`, `refine_zonal`).
        batch_size: samples per fit. dtype: the engine's fields and Jacobians; None: the
            device's `HardwarePlan.refine_dtype` (float32: twice as fast on a CPU, far more
            on a consumer GPU; the solve stays float64, see `refine_modal`).
        system: a calibrated system (`sim.system.SYSTEM_FIELDS`, e.g. `recon calibrate`'s):
            dot diameter and depth, pupil shift and scale; None: nominal.
        views: the first start is the per-pixel median of the base's estimates over this
            many of the pupil's symmetries (the pupil and dot are symmetric under the 8
            rotations and mirrors of the square grid, so each view of the frames gives
            another estimate of the same OPD); 1: the base's estimate of the frames as
            they are. None: all of them for a network (trained on aberrations that are
            as likely turned as not), 1 for any other base (an analytic estimate is the
            same in every view; a fixed start knows one orientation).
        restarts: at most this many more starts for a sample whose fit is poor
            (`good_fit`): each view's own estimate (after the median; the turned views
            after the base's own with views=1); the lowest misfit wins. 0: one start.
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
        views: int | None = None,
        restarts: int = 8,
    ) -> None:
        if mode not in ("modal", "zonal"):
            raise ValueError(f"refine mode must be 'modal' or 'zonal', got {mode!r}")
        if base.npix != cfg.pupil.npix:
            raise ValueError(f"{base.name} works at {base.npix} px, the system at {cfg.pupil.npix}")
        self.base, self.cfg, self.mode = base, cfg, mode
        plan = hardware_plan(device)
        self.matmul_precision, self.chunk = plan.refine_matmul, plan.refine_chunk
        self.model = FrameModel(cfg, device, dtype or plan.refine_torch_dtype, system)
        self.weighted = weighted
        self.use_noise(self.model.noise())
        j_max = cfg.aberration.noll_max if noll_max is None else int(noll_max)
        self.modes = list(range(2, j_max + 1))
        self._first_segment: torch.Tensor | None = None  # segmented: its mean is held
        if cfg.pupil.geometry == "segmented":  # piston, tip, tilt per segment + global
            basis, self.mode_labels = segment_fit_basis(cfg, j_max)
            first = torch.as_tensor(segment_means_weights(cfg)[0])
            self._first_segment = first.to(self.model.device)
        else:
            basis = torch.as_tensor(zernike_basis(self.modes, cfg.pupil.npix))
            self.mode_labels = [f"Noll {j}" for j in self.modes]
        basis = basis.to(self.model.device)
        self.basis = basis.to(self.model.dtype)
        mask = torch.as_tensor(self.model.mask, device=self.model.device)
        self.projector = torch.linalg.pinv(basis[:, mask])  # (P, J) float64 least squares
        self._mask_t = mask
        default_iter = MODAL_MAX_ITER if mode == "modal" else ZONAL_MAX_ITER
        self.max_iter = max_iter if max_iter is not None else default_iter
        self.smoothness = smoothness
        self.batch_size = batch_size
        # restarts from the turns and mirrors that leave the pupil as it is (a hexagonal
        # segmented pupil is not symmetric under a quarter turn)
        self.symmetries = pupil_symmetries(pupil_transmission(cfg.pupil))
        n_sym = len(self.symmetries)
        if views is None:
            views = n_sym if isinstance(base, NetworkEstimator) else 1
        self.views = min(max(int(views), 1), n_sym)
        # the views after the median; after the base's own estimate the others
        self._restart_views = self.symmetries[0 if self.views > 1 else 1 :]
        self.restarts = min(max(int(restarts), 0), len(self._restart_views))
        self.name = f"{base.name} + refine" + ("" if mode == "modal" else " (zonal)")
        self.wavelengths_m = list(cfg.wavelengths_m)
        self.npix = cfg.pupil.npix
        self.mask = self.model.mask
        self.needs_clear = needs_clear(base)
        self.last_report: RefineReport | None = None

    def use_noise(self, noise: NoiseModel) -> None:
        """Fit and judge frames with this noise (weights only when `weighted`)."""
        self.noise = noise if self.weighted else None
        self._judge = noise  # good_fit: the frames' own noise, weighted or not

    @property
    def frame_noise(self) -> NoiseModel:
        """The noise the frames are judged by (`use_noise`)."""
        return self._judge

    def estimate_noise(
        self,
        intensities: np.ndarray | torch.Tensor,
        wavelengths_m: Sequence[float] | None = None,
        clear: np.ndarray | torch.Tensor | None = None,
        read_noise_e: float | None = None,
        max_frames: int = 32,
    ) -> NoiseEstimate:
        """The frames' photon level and read noise (`estimate_noise`) from least-squares
        fits of the first `max_frames` from the base's estimates; `use_noise` applies it."""
        x = as_frames(intensities, self.wavelengths_m, self.npix, wavelengths_m)
        c = None
        if clear is not None:
            c = as_clear(clear, self.wavelengths_m, self.npix, len(x), wavelengths_m)
            c = np.ascontiguousarray(np.broadcast_to(c, x.shape)[:max_frames])
        x = x[:max_frames]
        rows = np.arange(len(x))
        start = self._first_start(self._views(x, c, rows))
        noise, judge = self.noise, self._judge
        self.noise, self._judge = None, NoiseModel(None)  # least squares: unit weights
        try:
            opd, rep = self._refine_batches(x, c, rows, start, "modal")
        finally:
            self.noise, self._judge = noise, judge
        amplitude = None if c is None else self.model.measured_amplitude(c)
        with torch.no_grad():
            fit = self.model.linearise(self.model.tensor(opd), amplitude).intensity
        return estimate_noise(fit, x, self.model.lit, rep.misfit, read_noise_e)

    def estimate(
        self,
        intensities: np.ndarray | torch.Tensor,
        wavelengths_m: Sequence[float] | None = None,
        clear: np.ndarray | torch.Tensor | None = None,
    ) -> np.ndarray:
        """OPD (B, H, W) [nm] float32, piston removed; `last_report` holds the fit's outcome.

        With `clear` frames the forward model takes each sample's pupil amplitude from
        them (`FrameModel.measured_amplitude`), and the base estimator gets them too."""
        x = as_frames(intensities, self.wavelengths_m, self.npix, wavelengths_m)
        c = None
        if clear is not None:
            c = as_clear(clear, self.wavelengths_m, self.npix, len(x), wavelengths_m)
        every = np.arange(len(x))
        views = self._views(x, c, every)
        start = self._first_start(views)
        opd, rep = self._fit(x, c, every, start)
        tried = [start]  # (B, N, N) each; NaN: not tried for that sample
        for symmetry in self._restart_views[: self.restarts]:
            poor = np.nonzero(~rep.good_fit & ~rep.mismatch)[0]
            if poor.size == 0:
                break
            if symmetry in views:
                alt = views[symmetry][poor]
            else:
                alt = self._start(x, c, poor, symmetry)
            new = np.ones(poor.size, dtype=bool)  # an equivariant base gives nothing new
            for earlier in tried:
                d = np.sqrt(np.mean((alt - earlier[poor])[:, self.mask] ** 2, axis=1))
                new &= ~(d <= SAME_NM)  # a start already fitted (NaN: not tried)
            full = np.full_like(start, np.nan)
            full[poor] = alt
            tried.append(full)
            poor, alt = poor[new], alt[new]
            if poor.size == 0:
                continue
            opd_alt, rep_alt = self._fit(x, c, poor, alt)
            rep.starts[poor] += 1
            rep.iterations[poor] += rep_alt.iterations
            # another start, the same minimum: the misfit is the model's, not the start's
            d = np.sqrt(np.mean((opd_alt - opd[poor])[:, self.mask] ** 2, axis=1))
            rep.mismatch[poor[d <= SAME_NM]] = True
            better = rep_alt.misfit < rep.misfit[poor]
            opd[poor[better]] = opd_alt[better]
            for key in ("misfit", "solver_status", "good_fit"):
                getattr(rep, key)[poor[better]] = getattr(rep_alt, key)[better]
        self.last_report = rep
        return np.where(self.model.lit, remove_piston(opd, self.mask), 0.0).astype(np.float32)

    def _views(
        self, frames: np.ndarray, clear: np.ndarray | None, rows: np.ndarray
    ) -> dict[tuple[int, bool], np.ndarray]:
        """The base's estimates (b, N, N) [nm] of frames[rows] in each of the first
        `views` symmetries, mapped back (`_start`)."""
        return {s: self._start(frames, clear, rows, s) for s in self.symmetries[: self.views]}

    @staticmethod
    def _first_start(views: dict[tuple[int, bool], np.ndarray]) -> np.ndarray:
        """The per-pixel median (B, N, N) [nm] of the views' estimates (one: itself)."""
        maps = list(views.values())
        if len(maps) == 1:
            return maps[0]
        return np.ascontiguousarray(np.median(np.stack(maps), axis=0).astype(maps[0].dtype))

    def _start(
        self,
        frames: np.ndarray,
        clear: np.ndarray | None,
        rows: np.ndarray,
        symmetry: tuple[int, bool],
    ) -> np.ndarray:
        """The base's estimate (b, N, N) [nm] of frames[rows] seen rotated by k x 90
        degrees (and transposed), mapped back: the same OPD for a symmetric system."""
        turned = np.ascontiguousarray(transform(frames[rows], *symmetry))
        turned_clear = None
        if clear is not None:
            turned_clear = np.ascontiguousarray(transform(clear[rows], *symmetry))
        start = run_estimate(self.base, turned, self.wavelengths_m, turned_clear)
        if start.shape != (len(rows), self.npix, self.npix):
            raise ValueError(f"{self.base.name} returned {start.shape}, not {len(rows)} maps")
        return np.ascontiguousarray(untransform(start, *symmetry))

    def _fit(
        self, frames: np.ndarray, clear: np.ndarray | None, rows: np.ndarray, start: np.ndarray
    ) -> tuple[np.ndarray, RefineReport]:
        """The whole fit of frames[rows] from starts: modal, then in zonal mode the pixels
        polish it (a local method) and, where that fit is poor, the start itself; the
        report is the last stage's (iterations summed).

        Two zonal starts because a local method needs a start in its basin: the modal fit
        is one for aberrations in the modes, and drops everything beyond them; the base's
        own map keeps what lies beyond (a power-law screen: 58 % of its variance past
        Noll 36; from the Noll 2-36 projection the zonal fit stalls above 50 nm,
        docs/realism.md). The lower misfit wins."""
        opd, rep = self._refine_batches(frames, clear, rows, start, "modal")
        if self.mode == "zonal":
            opd, rep_z = self._refine_batches(frames, clear, rows, opd, "zonal")
            iterations = rep.iterations + rep_z.iterations
            poor = np.nonzero(~rep_z.good_fit)[0]
            if poor.size:
                opd_s, rep_s = self._refine_batches(frames, clear, rows[poor], start[poor], "zonal")
                iterations[poor] += rep_s.iterations
                better = rep_s.misfit < rep_z.misfit[poor]
                opd[poor[better]] = opd_s[better]
                for field in dataclasses.fields(RefineReport):
                    getattr(rep_z, field.name)[poor[better]] = getattr(rep_s, field.name)[better]
            rep_z.iterations = iterations
            rep = rep_z
        return opd, rep

    def _refine_batches(
        self,
        frames: np.ndarray,
        clear: np.ndarray | None,
        rows: np.ndarray,
        start: np.ndarray,
        mode: str,
    ) -> tuple[np.ndarray, RefineReport]:
        """`refine` of frames[rows] from starts (b, N, N) in batches of `batch_size`."""
        outs, reports = [], []
        for a in range(0, len(rows), self.batch_size):
            sub = rows[a : a + self.batch_size]
            c = None if clear is None else clear[sub]
            opd, rep = self.refine(frames[sub], start[a : a + self.batch_size], mode, c)
            outs.append(opd)
            reports.append(rep)
        return np.concatenate(outs), RefineReport.join(reports)

    @torch.no_grad()
    def refine(
        self,
        frames: np.ndarray,
        start_nm: np.ndarray,
        mode: str | None = None,
        clear: np.ndarray | None = None,
    ) -> tuple[np.ndarray, RefineReport]:
        """One fit of starts (B, N, N) [nm] to frames (B, L, N, N) in the engine's order
        (``mode``: the estimator's by default; no restarts, no modal stage), with the
        pupil amplitude of `clear` frames (B, L, N, N) when given."""
        mode = mode or self.mode
        y = self.model.tensor(frames)
        amplitude = None if clear is None else self.model.measured_amplitude(clear)
        s = torch.as_tensor(start_nm, dtype=torch.float64, device=self.model.device)
        if mode == "modal":
            if self._first_segment is not None:  # the fit holds the first segment at 0
                s = s - torch.einsum("bhw,hw->b", s, self._first_segment)[:, None, None]
            c0 = s[:, self._mask_t] @ self.projector  # (B, P) -> (B, J)
            max_iter = self.max_iter if self.mode == "modal" else MODAL_MAX_ITER
            c, rep = refine_modal(
                self.model, y, c0, self.basis, self.noise, max_iter, judge=self._judge,
                matmul_precision=self.matmul_precision, amplitude=amplitude, chunk=self.chunk,
            )  # fmt: skip
            opd = torch.einsum("bj,jhw->bhw", c, self.basis.to(torch.float64))
        else:
            opd, rep = refine_zonal(
                self.model, y, s, self.noise, self.smoothness, max_iter=self.max_iter,
                judge=self._judge, matmul_precision=self.matmul_precision, amplitude=amplitude,
            )  # fmt: skip
        return opd.cpu().numpy(), rep
