"""The classical ZWFS reconstruction (N'Diaye et al. 2013), second-order form of pyZELDA.

The inversion itself (`sim.analytic.ndiaye_inverse`) lives beside the forward model.

Error budget at small aberrations: the model's expansion error is O(phi^3) (relative
phi^2 / 6, 0.3 % at 20 nm RMS and 1 um), but the main error is first order: the
aberration leaks through the dot, so the true reference wave is b + i LP(P phi), not b;
to first order the estimate is phi - LP(P phi) / b, a gain of about 0.81 on tip/tilt
(measured, quick config) and within 1 % of 1 on higher modes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from data.readers import attr_value, check_dataset_file, open_h5
from data.schema import DatasetError, pupil_mask
from data.wavelengths import wavelength_indices
from recon.estimators.base import as_clear, as_frames, register_baseline, remove_piston
from sim.aberrations import stream_id
from sim.analytic import ndiaye_inverse
from sim.config import SimConfig
from sim.detector import bin_frames
from sim.samples import file_illumination, reference_frames
from sim.system import NOMINAL_SYSTEM, system_terms
from sim.zwfs import ZWFSModel

__all__ = ["AnalyticEstimator", "analytic_baseline"]

REFERENCE_MATCH = 2e-3
"""Largest allowed |reference_zwfs(file) - reference_zwfs(config)| (normalised units).

The file's frames are complex64 renders of the same engine (agreement ~1e-6); 2e-3 only
catches a file whose config does not describe its frames (another system).
"""


class AnalyticEstimator:
    """Classical reconstruction at one wavelength behind the `Estimator` interface.

    Args:
        cfg: the simulated system (a dataset's ``config`` attribute).
        wavelength_um: the wavelength used; None: 1.0 um when the system has it, else
            the wavelength closest to the dot's lambda0.
        illumination: the file's illumination map (N, N) (`sim.samples.file_illumination`),
            or None (even). Per-sample clear frames, when `estimate` gets them, replace it:
            the pupil amplitude P = sqrt(clear) and the reference wave b = T(P) follow.
    """

    def __init__(
        self,
        cfg: SimConfig,
        wavelength_um: float | None = None,
        illumination: torch.Tensor | None = None,
    ) -> None:
        have_m = cfg.wavelengths_m
        if wavelength_um is None:  # 1.0 um when there, else the one closest to lambda0
            target_um = 1.0 if any(abs(w - 1e-6) <= 1e-9 for w in have_m) else None
            if target_um is None:
                index = int(np.argmin(np.abs(np.asarray(cfg.wavelengths_um) - cfg.mask.lambda0_um)))
            else:
                index = int(wavelength_indices(have_m, [target_um * 1e-6])[0])
        else:
            index = int(wavelength_indices(have_m, [wavelength_um * 1e-6])[0])
        self.wavelength_um = float(cfg.wavelengths_um[index])
        # b in double precision: the reference of the inversion, computed once.
        exact = cfg.model_copy(update={"precision": "complex128"})
        with torch.no_grad():
            model = ZWFSModel(exact, device="cpu")
            self._engine, self._index = model, index
            binning = cfg.detector.binning
            amplitude = model.amplitude  # (N, N), normalised: the clear frame is its square
            if illumination is not None:
                amplitude = system_terms(model, NOMINAL_SYSTEM, illumination)[0]
            b = bin_frames(self._reference_wave(amplitude[None])[0], binning)
            self.reference_zwfs = reference_frames(model, illumination)[1][index].numpy()
            transmission = bin_frames(model.pupil, binning).numpy()
        self.b = b.numpy()
        self.pupil_amplitude = bin_frames(amplitude.square(), binning).sqrt().numpy()
        self.theta_rad = float(model.theta_rad[index])
        self.mask = pupil_mask(transmission)
        self.lit = self.pupil_amplitude * self.b > 0
        self.cfg = cfg
        self.wavelengths_m = [self.wavelength_um * 1e-6]
        self.npix = cfg.pupil.npix // binning
        self.name = f"analytic@{self.wavelength_um:g}um"

    @classmethod
    def from_dataset(
        cls, path: str | os.PathLike, wavelength_um: float | None = None
    ) -> AnalyticEstimator:
        """The baseline for the system of dataset `path` (its ``config`` attribute).

        Checks that the file's ``reference_zwfs`` is what the config predicts.
        """
        path = Path(path)
        with open_h5(path) as f:
            check_dataset_file(f, required=("reference_zwfs", "wavelength"))
            text = attr_value(f.attrs.get("config"))
            if not isinstance(text, str):
                raise DatasetError(f"{path} has no 'config' attribute to rebuild its system from")
            cfg = SimConfig.model_validate_json(text)
            seed, split = attr_value(f.attrs.get("seed")), attr_value(f.attrs.get("split"))
            illumination = None
            if cfg.pupil.amplitude_rms > 0 and not cfg.pupil.amplitude_per_sample:
                engine = ZWFSModel(cfg)  # the file's one map, from its seed and split
                illumination = file_illumination(engine, int(seed), stream_id(str(split)))
            est = cls(cfg, wavelength_um, illumination)
            file_wl = np.asarray(f["wavelength"][:]) * 1e6
            k = int(np.argmin(np.abs(file_wl - est.wavelength_um)))
            ref = np.asarray(f["reference_zwfs"][k], dtype=np.float64)
        worst = float(np.abs(ref - est.reference_zwfs).max())
        if worst > REFERENCE_MATCH:
            raise DatasetError(
                f"{path}: reference_zwfs differs from its config's system by {worst:.3g} "
                f"(> {REFERENCE_MATCH}); the analytic baseline needs the file's true system"
            )
        return est

    def _reference_wave(self, amplitude: torch.Tensor) -> torch.Tensor:
        """b = T(P) (B, N, N) at this wavelength for pupil amplitudes P (B, N, N)."""
        n_l = len(self._engine.wavelengths_um)
        maps = amplitude.to(torch.float64)[:, None, None].expand(-1, n_l, 1, -1, -1)
        return self._engine.dot_operator(maps)[:, self._index, 0]

    def estimate(
        self,
        intensities: np.ndarray | torch.Tensor,
        wavelengths_m: Sequence[float] | None = None,
        clear: np.ndarray | torch.Tensor | None = None,
    ) -> np.ndarray:
        """OPD (B, H, W) [nm] from frames (B, 1, H, W) or (1, H, W) at this wavelength.

        Piston (the mean inside the pupil) removed; 0 outside the lit pupil. With `clear`
        frames the inversion uses each sample's P = sqrt(clear) and b = T(P) (pyZELDA's).
        """
        x = as_frames(intensities, self.wavelengths_m, self.npix, wavelengths_m)
        pupil, b = self.pupil_amplitude, self.b
        if clear is not None:
            if self.cfg.detector.binning != 1:
                raise ValueError("the analytic inverse takes clear frames at binning 1 only")
            c = as_clear(clear, self.wavelengths_m, self.npix, len(x), wavelengths_m)[:, 0]
            amplitude = torch.as_tensor(np.sqrt(np.clip(c, 0.0, None)), dtype=torch.float64)
            with torch.no_grad():
                b = self._reference_wave(amplitude).numpy()
            pupil = amplitude.numpy()
        phi = ndiaye_inverse(x[:, 0].astype(np.float64), pupil, b, self.theta_rad)  # (B, H, W)
        opd = phi * (self.wavelength_um * 1e3) / (2 * np.pi)  # rad -> nm
        return np.where(self.lit, remove_piston(opd, self.mask), 0.0).astype(np.float32)


@register_baseline("analytic")
def analytic_baseline(
    data_path: str | os.PathLike, wavelength_um: float | None = None
) -> AnalyticEstimator:
    """Registry factory: `AnalyticEstimator.from_dataset`."""
    return AnalyticEstimator.from_dataset(data_path, wavelength_um)
