"""The classical ZWFS reconstruction (N'Diaye et al. 2013), second-order form of pyZELDA.

The N'Diaye model of the normalised ZWFS intensity,

    I = P^2 + 2 b^2 (1 - cos th) + 2 P b [sin(phi) sin(th) - cos(phi) (1 - cos th)],

with sin(phi) ~ phi and cos(phi) ~ 1 - phi^2 / 2 is a quadratic in phi,

    P b (1 - cos th) phi^2 + 2 P b sin(th) phi + C = 0,
    C = P^2 + 2 b^2 (1 - cos th) - 2 P b (1 - cos th) - I,

whose physical root (the one that is 0 for the unaberrated frame) is

    phi = [-sin th + sqrt(delta)] / (1 - cos th),
    delta = sin^2 th - (1 - cos th) C / (P b).

For P = 1 this is pyZELDA's `ZELDA.analyze` determinant and root; a negative delta (the
intensity beyond the extremum of the model) is set to 0, as pyZELDA does. P is the
normalised pupil amplitude (the square root of the clear-pupil frame), b the reference
wave of the zero-aberration system (`ZWFSModel.reference_wave`), th the dot phase at the
chosen wavelength. One wavelength at a time: for th = pi/2 the model is monotonic in
phi only on [-pi/4, 3 pi/4], so beyond ~lambda/8 of OPD the reconstruction fails; that
is the physics the networks are meant to beat.

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

from recon.estimator import WAVELENGTH_MATCH_M, as_frames, register_baseline
from sim.config import SimConfig

__all__ = ["AnalyticEstimator", "analytic_baseline", "ndiaye_inverse"]

REFERENCE_MATCH = 2e-3
"""Largest allowed |reference_zwfs(file) - reference_zwfs(config)| (normalised units).

The file's frames are complex64 renders of the same engine (agreement ~1e-6); 2e-3 only
catches a file whose config does not describe its frames (another system).
"""


def ndiaye_inverse(
    intensity: np.ndarray, pupil: np.ndarray, b: np.ndarray, theta_rad: float
) -> np.ndarray:
    """Phase [rad] from normalised ZWFS intensity, second-order N'Diaye inversion.

    Args:
        intensity: (..., H, W) clear-pupil-normalised ZWFS frames.
        pupil: (H, W) normalised pupil amplitude P (sqrt of the clear-pupil frame).
        b: (H, W) real reference wave in the same units.
        theta_rad: dot phase [rad] at this wavelength.

    Returns:
        (..., H, W) float64 phase [rad], 0 where P b = 0.
    """
    c, s = np.cos(theta_rad), np.sin(theta_rad)
    if abs(1 - c) < 1e-6:
        raise ValueError(f"dot phase {theta_rad:.3g} rad gives no ZWFS signal (1 - cos = 0)")
    lit = pupil * b > 0
    pb = np.where(lit, pupil * b, 1.0)
    const = pupil**2 + 2 * b**2 * (1 - c) - 2 * pupil * b * (1 - c) - intensity
    delta = s**2 - (1 - c) * const / pb
    phi = (-s + np.sqrt(np.clip(delta, 0.0, None))) / (1 - c)
    return np.where(lit, phi, 0.0)


class AnalyticEstimator:
    """Classical reconstruction at one wavelength behind the `Estimator` interface.

    Args:
        cfg: the simulated system (a dataset's ``config`` attribute).
        wavelength_um: the wavelength used; None: 1.0 um when the system has it, else
            the wavelength closest to the dot's lambda0.
    """

    def __init__(self, cfg: SimConfig, wavelength_um: float | None = None) -> None:
        from sim.detector import bin_frames
        from sim.pupil import pupil_mask
        from sim.zwfs import ZWFSModel

        have = np.asarray(cfg.wavelengths_um, dtype=np.float64)
        if wavelength_um is None:
            close = np.abs(have - 1.0) <= WAVELENGTH_MATCH_M * 1e6
            index = (
                int(np.flatnonzero(close)[0])
                if close.any()
                else int(np.argmin(np.abs(have - cfg.mask.lambda0_um)))
            )
        else:
            hit = np.flatnonzero(np.abs(have - wavelength_um) <= WAVELENGTH_MATCH_M * 1e6)
            if hit.size == 0:
                avail = ", ".join(f"{w:.4g}" for w in have)
                raise ValueError(
                    f"wavelength {wavelength_um} um is not in the dataset; available: {avail} um"
                )
            index = int(hit[0])
        self.wavelength_um = float(have[index])
        # b in double precision: the reference of the inversion, computed once.
        exact = cfg.model_copy(update={"precision": "complex128"})
        with torch.no_grad():
            model = ZWFSModel(exact, device="cpu")
            binning = cfg.detector.binning
            b = bin_frames(model.reference_wave()[index], binning)
            clear = bin_frames(model.amplitude**2, binning)
            self.reference_zwfs = model.reference_zwfs()[index].numpy()
            transmission = bin_frames(model.pupil, binning).numpy()
        self.b = b.numpy()
        self.pupil_amplitude = np.sqrt(clear.numpy())
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
        from data.readers import attr_value, check_dataset_file, open_h5
        from data.schema import DatasetError

        path = Path(path)
        with open_h5(path) as f:
            check_dataset_file(f, required=("reference_zwfs", "wavelength"))
            text = attr_value(f.attrs.get("config"))
            if not isinstance(text, str):
                raise DatasetError(f"{path} has no 'config' attribute to rebuild its system from")
            cfg = SimConfig.model_validate_json(text)
            est = cls(cfg, wavelength_um)
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

    def estimate(
        self, intensities: np.ndarray | torch.Tensor, wavelengths_m: Sequence[float] | None = None
    ) -> np.ndarray:
        """OPD (B, H, W) [nm] from frames (B, 1, H, W) or (1, H, W) at this wavelength.

        Piston (the mean inside the pupil) removed; 0 outside the lit pupil.
        """
        x = as_frames(intensities, self.wavelengths_m, self.npix, wavelengths_m)
        phi = ndiaye_inverse(
            x[:, 0].astype(np.float64), self.pupil_amplitude, self.b, self.theta_rad
        )  # (B, H, W) rad
        opd = phi * (self.wavelength_um * 1e3) / (2 * np.pi)  # rad -> nm
        opd -= opd[:, self.mask].mean(axis=1)[:, None, None]
        return np.where(self.lit, opd, 0.0).astype(np.float32)


@register_baseline("analytic")
def analytic_baseline(
    data_path: str | os.PathLike, wavelength_um: float | None = None
) -> AnalyticEstimator:
    """Registry factory: `AnalyticEstimator.from_dataset`."""
    return AnalyticEstimator.from_dataset(data_path, wavelength_um)
