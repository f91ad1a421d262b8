"""What a lab script calls: OPD maps [nm] and Noll coefficients from real or simulated frames.

From a lab script (plain torch, no Lightning)::

    from recon.reconstructor import Reconstructor
    rec = Reconstructor.from_checkpoint("runs/gru-.../checkpoints/best.ckpt")
    result = rec(frames)                 # frames (L, H, W) or (B, L, H, W), clear-pupil normalised
    result.opd_nm, result.coefficients_nm, result.modes

Hybrid (the network's estimate refined by fitting the frames with the ZWFS engine of the
checkpoint's system, `recon.refine`)::

    rec = Reconstructor.from_checkpoint(run, refine="modal")
    result = rec(frames); result.refine_report.counts()

The fit weighs each pixel by its noise. By default that noise is measured from the first
frames it sees (`RefinedEstimator.estimate_noise`, kept in ``rec.noise_estimate``);
state it instead for a camera: ``noise=NoiseModel.from_camera(lab.clear_level, gain,
read_noise_e, lab.pixel_area)``, or ``noise="system"`` for the config's detector.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.predictions import PredictionArrays, write_prediction_file
from recon.estimators.base import run_estimate
from recon.estimators.network import NetworkEstimator
from recon.refine.estimator import RefinedEstimator
from recon.refine.noise import NoiseModel
from recon.refine.noise_estimate import NoiseEstimate
from recon.refine.report import RefineReport
from recon.refine.tracker import DEFAULT_REFRESH, DEFAULT_STEPS, FrameTracker, TrackStep
from sim.config import SimConfig
from sim.zernike import zernike_basis, zernike_coefficients

__all__ = ["Prediction", "Reconstructor", "write_prediction"]

DEFAULT_MODES = tuple(range(2, 37))


@dataclass
class Prediction:
    """opd_nm (B, H, W) piston-free OPD [nm]; coefficients_nm (B, M) [nm RMS]; modes (M,) Noll j."""

    opd_nm: np.ndarray
    coefficients_nm: np.ndarray
    modes: np.ndarray
    wavelengths_m: np.ndarray
    pupil: np.ndarray
    refine_report: RefineReport | None = None
    noise: NoiseModel | None = None


class Reconstructor:
    """A trained network with a Zernike projection: frames in, OPD and coefficients out.

    Args:
        estimator: the network.
        modes: Noll indices of the coefficients.
        refine: None, or "modal" / "zonal": refine the network's estimate with the engine
            (`RefinedEstimator`) of `sim_config`, by default the checkpoint's system.
        sim_config: the system the frames come from (its detector sets the noise weights).
        system: a calibrated dot and pupil (`recon.refine.calibrate`) for the
            refinement; None: the nominal system.
        noise: the frames' noise for the refinement: ``"estimate"`` (measured from the
            first call's frames, then kept), ``"system"`` (`sim_config`'s detector), or a
            `NoiseModel` (e.g. `NoiseModel.from_camera`).
        read_noise_e: with ``"estimate"``, a known read noise [e-] (else measured too).
    """

    def __init__(
        self,
        estimator: NetworkEstimator,
        modes: Sequence[int] = DEFAULT_MODES,
        refine: str | None = None,
        sim_config: SimConfig | None = None,
        system: Sequence[float] | None = None,
        noise: NoiseModel | str = "estimate",
        read_noise_e: float | None = None,
    ) -> None:
        if isinstance(noise, str) and noise not in ("estimate", "system"):
            raise ValueError(f"noise must be 'estimate', 'system' or a NoiseModel, got {noise!r}")
        self.estimator = estimator
        self.noise: NoiseModel | str = noise
        self.read_noise_e = read_noise_e
        self.noise_estimate: NoiseEstimate | None = None
        self.refined: RefinedEstimator | None = None
        self._tracker: FrameTracker | None = None
        if refine is not None:
            cfg = sim_config
            if cfg is None:
                if estimator.meta.get("sim_config") is None:
                    raise ValueError("refine needs the system: the checkpoint has no sim_config")
                cfg = SimConfig.model_validate(estimator.meta["sim_config"])
            self.refined = RefinedEstimator(
                estimator, cfg, mode=refine, device=estimator.device, system=system
            )
            if isinstance(noise, NoiseModel):
                self.use_noise(noise)
        self.modes = np.asarray(modes, dtype=np.int32)
        npix = estimator.npix
        # the grid of the model: array width = pupil diameter (unit diameter here)
        self.basis = zernike_basis(list(self.modes), npix, 1.0)
        self.mask = estimator.mask

    def track(
        self,
        frame: np.ndarray,
        clear: np.ndarray | None = None,
        steps: int = DEFAULT_STEPS,
        refresh: int = DEFAULT_REFRESH,
    ) -> TrackStep:
        """One frame (L, H, W) of a loop at frame rate: the last frame's estimate refined by
        `steps` Gauss-Newton steps (`recon.refine.FrameTracker`; the Jacobian refreshed
        every `refresh` frames; the network reseeds the first frame and any poor fit).
        `reset_tracking` forgets the state. Needs refine="modal"."""
        if self.refined is None or self.refined.mode != "modal":
            raise ValueError("tracking refines the last estimate: build with refine='modal'")
        if self.noise == "estimate" and self.noise_estimate is None:
            self.noise_estimate = self.refined.estimate_noise(frame, None, clear, self.read_noise_e)
            self.refined.use_noise(self.noise_estimate.model())
        if self._tracker is None or (self._tracker.steps, self._tracker.refresh) != (
            steps,
            refresh,
        ):
            self._tracker = FrameTracker(self.refined, steps=steps, refresh=refresh)
        return self._tracker(frame, clear)

    def reset_tracking(self) -> None:
        """The next `track` call starts from the network's estimate."""
        self._tracker = None

    def use_noise(self, noise: NoiseModel) -> None:
        """Refine with this noise from now on (`NoiseModel.from_camera`, `.from_photons`)."""
        if self.refined is None:
            raise ValueError("noise applies to the refinement: build with refine='modal'")
        self.noise = noise
        self.refined.use_noise(noise)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        modes: Sequence[int] = DEFAULT_MODES,
        device: str = "cpu",
        refine: str | None = None,
        sim_config: SimConfig | None = None,
        system: Sequence[float] | None = None,
        noise: NoiseModel | str = "estimate",
        read_noise_e: float | None = None,
    ) -> Reconstructor:
        """Load a `recon train` checkpoint (file or run folder); refine as `Reconstructor`."""
        net = NetworkEstimator.from_checkpoint(path, device=device)
        return cls(net, modes, refine, sim_config, system, noise, read_noise_e)

    def __call__(
        self,
        frames: np.ndarray,
        wavelengths_m: Sequence[float] | None = None,
        clear: np.ndarray | None = None,
    ) -> Prediction:
        """Reconstruct frames (L, H, W) or (B, L, H, W); see `NetworkEstimator.estimate`.

        clear: their clear-pupil frames (`data.lab.LabFrames.clear`), which a network
        trained on frames divided by them needs and the refinement's forward model uses.
        """
        est = self.refined if self.refined is not None else self.estimator
        if self.refined is not None and self.noise == "estimate" and self.noise_estimate is None:
            self.noise_estimate = self.refined.estimate_noise(
                frames, wavelengths_m, clear, self.read_noise_e
            )
            self.refined.use_noise(self.noise_estimate.model())
        opd = run_estimate(est, frames, wavelengths_m, clear)  # -> (B, H, W) [nm]
        coeffs = zernike_coefficients(opd, self.basis, self.mask)  # -> (B, M) [nm RMS]
        return Prediction(
            opd_nm=opd.astype(np.float32),
            coefficients_nm=np.asarray(coeffs, dtype=np.float32),
            modes=self.modes,
            wavelengths_m=np.asarray(self.estimator.wavelengths_m),
            pupil=self.mask.astype(np.float32),
            refine_report=None if self.refined is None else self.refined.last_report,
            noise=None if self.refined is None else self.refined.frame_noise,
        )


def write_prediction(pred: Prediction, out: str | os.PathLike, source: str) -> Path:
    """Write a prediction's OPD maps and coefficients with units (`data.predictions`)."""
    arrays = PredictionArrays(
        pred.opd_nm, pred.coefficients_nm, pred.modes, pred.wavelengths_m, pred.pupil
    )
    return write_prediction_file(out, source, arrays)
