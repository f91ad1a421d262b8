"""A simulated ZWFS bench: a camera and a deformable mirror with a lab's interface.

A lab script talks to two objects: a camera (`grab`, `grab_clear`, `grab_dark`: raw
frames in ADU) and a deformable mirror (`apply`: actuator strokes [nm of surface]).
`SimulatedBench` builds both on the engine (`sim.zwfs.ZWFSModel`) with the detector's
noise, so a script tested against it runs on hardware by swapping the two objects
(examples/close_the_loop.py, docs/lab.md).

Units and signs (docs/lab.md):
- the DM surface s [nm] adds an OPD of 2 s in reflection; to cancel an OPD w, command
  the surface -w / 2 (`DeformableMirror.correction`);
- actuators sit on a square grid of `actuators` across the pupil diameter, their
  influence functions Gaussian with `coupling` (0-1) at the neighbouring actuator;
- frames are (L, H, W) in ADU, rows first (FITS order: row 0 at the bottom when
  displayed with origin="lower"), a bias of `bias_adu`, `gain_e_per_adu`.
"""

from __future__ import annotations

import numpy as np
import torch

from sim.aberrations import stream_id
from sim.config import SimConfig
from sim.detector import add_noise
from sim.zwfs import ZWFSModel

__all__ = ["DeformableMirror", "SimulatedBench", "SimulatedCamera"]


class DeformableMirror:
    """Gaussian influence functions on an `actuators` x `actuators` grid across the pupil.

    Args:
        npix: pixels across the pupil (the engine's grid).
        actuators: actuators across the pupil diameter (the grid's outer ones on its edge).
        coupling: an influence function's value at the neighbouring actuator (0-1).
        stroke_nm: largest surface stroke of one actuator [nm]; commands are clipped.
    """

    def __init__(
        self, npix: int, actuators: int = 12, coupling: float = 0.3, stroke_nm: float = 2000.0
    ) -> None:
        if actuators < 2 or not 0 < coupling < 1:
            raise ValueError(
                f"need >= 2 actuators and 0 < coupling < 1, got {actuators}, {coupling}"
            )
        centres = np.linspace(-0.5, 0.5, actuators)  # [pupil diameters]
        pitch = centres[1] - centres[0]
        ay, ax = np.meshgrid(centres, centres, indexing="ij")
        keep = np.hypot(ay, ax) <= 0.5 + pitch / 2  # the actuators that see the pupil
        self.positions = np.stack((ay[keep], ax[keep]), axis=1)  # (A, 2) [D], (y, x)
        x = (np.arange(npix) - (npix - 1) / 2) / npix  # pixel centres [D]
        dy = x[None, :, None] - self.positions[:, 0, None, None]
        dx = x[None, None, :] - self.positions[:, 1, None, None]
        self.influence = coupling ** ((dy**2 + dx**2) / pitch**2)  # (A, N, N) [nm per nm]
        self.stroke_nm = stroke_nm
        self.command = np.zeros(len(self.positions))  # (A,) [nm of surface]
        self._fits: dict[bytes, np.ndarray] = {}  # per pupil: least squares surface -> command

    @property
    def n_actuators(self) -> int:
        return len(self.positions)

    def apply(self, command_nm: np.ndarray) -> None:
        """Set every actuator's stroke (A,) [nm of surface], clipped to +-stroke_nm."""
        command = np.asarray(command_nm, dtype=np.float64)
        if command.shape != self.command.shape:
            raise ValueError(f"the DM takes {self.n_actuators} strokes, got shape {command.shape}")
        self.command = np.clip(command, -self.stroke_nm, self.stroke_nm)

    def surface_nm(self, command_nm: np.ndarray | None = None) -> np.ndarray:
        """The surface (N, N) [nm] of a command (default: the applied one)."""
        c = self.command if command_nm is None else np.asarray(command_nm)
        return np.tensordot(c, self.influence, axes=1)

    def correction(self, opd_nm: np.ndarray, pupil: np.ndarray) -> np.ndarray:
        """The command change (A,) [nm] whose surface best cancels an OPD map (N, N) [nm]
        over the pupil: least squares of the surface -opd / 2 (reflection doubles it)."""
        pupil = np.asarray(pupil, dtype=bool)
        key = np.packbits(pupil).tobytes()
        if key not in self._fits:  # the influence functions on the pupil's pixels, inverted
            self._fits[key] = np.linalg.pinv(self.influence[:, pupil].T, rcond=1e-6)
        return self._fits[key] @ (-np.asarray(opd_nm, dtype=np.float64)[pupil] / 2)


class SimulatedCamera:
    """Frames of the bench's ZWFS in ADU; the DM's surface and the aberration in the beam."""

    def __init__(self, bench: SimulatedBench) -> None:
        self._bench = bench

    @property
    def gain_e_per_adu(self) -> float:
        return self._bench.gain_e_per_adu

    @property
    def read_noise_e(self) -> float:
        return self._bench.cfg.detector.read_noise_e

    def grab(self) -> np.ndarray:
        """One ZWFS frame per wavelength (L, H, W) [ADU] of the current beam."""
        return self._bench.expose(dot=True)

    def grab_clear(self, n: int = 16) -> np.ndarray:
        """The mean of n frames with the dot out of the beam (L, H, W) [ADU]."""
        return np.mean([self._bench.expose(dot=False) for _ in range(n)], axis=0)

    def grab_dark(self, n: int = 16) -> np.ndarray:
        """The mean of n frames with the light off (L, H, W) [ADU]."""
        return np.mean([self._bench.expose(dot=None) for _ in range(n)], axis=0)


class SimulatedBench:
    """The engine behind a camera and a DM (module docstring).

    Args:
        cfg: the ZWFS (its detector.photons and read_noise_e are the camera's; photons
            must be set).
        aberration_nm: the bench's own OPD (N, N) [nm] (default flat); `drift_nm` adds a
            random walk of its Noll modes per frame.
        gain_e_per_adu, bias_adu: the camera's conversion; margin_px: dark pixels around
            the pupil grid in each frame.
    """

    def __init__(
        self,
        cfg: SimConfig,
        aberration_nm: np.ndarray | None = None,
        actuators: int = 12,
        coupling: float = 0.3,
        gain_e_per_adu: float = 1.0,
        bias_adu: float = 100.0,
        margin_px: int = 8,
        seed: int = 0,
    ) -> None:
        if cfg.detector.photons is None:
            raise ValueError("the simulated camera needs detector.photons (photons per frame)")
        self.cfg = cfg
        self.engine = ZWFSModel(cfg.model_copy(update={"precision": "complex128"}))
        npix = cfg.pupil.npix
        self.pupil = self.engine.mask.numpy()
        self.dm = DeformableMirror(npix, actuators, coupling)
        self.camera = SimulatedCamera(self)
        self.aberration_nm = (
            np.zeros((npix, npix)) if aberration_nm is None else np.asarray(aberration_nm, float)
        )
        self.gain_e_per_adu, self.bias_adu, self.margin_px = gain_e_per_adu, bias_adu, margin_px
        self.seed, self.frames_taken = seed, 0
        self._per_pixel = cfg.detector.photons / int(self.engine.detector_mask.sum())

    def beam_opd_nm(self) -> np.ndarray:
        """The OPD (N, N) [nm] the camera sees: the aberration plus twice the DM surface."""
        return self.aberration_nm + 2 * self.dm.surface_nm()

    def residual_rms_nm(self) -> float:
        """RMS [nm] of the beam's OPD over the pupil, piston removed (the truth)."""
        return float(np.std(self.beam_opd_nm()[self.pupil]))

    def expose(self, dot: bool | None) -> np.ndarray:
        """One raw frame (L, H, W) [ADU]: ZWFS (dot True), clear (False) or dark (None)."""
        n_wl = len(self.cfg.wavelengths_um)
        if dot is None:
            light = np.zeros((1, n_wl, self.cfg.pupil.npix, self.cfg.pupil.npix))
        elif dot:
            with torch.no_grad():
                opd = torch.as_tensor(self.beam_opd_nm()[None])
                light = self.engine(opd).numpy()
        else:  # the dot out of the beam: the clear pupil
            light = self.engine.reference_clear().numpy()[None]
        m, det = self.margin_px, self.cfg.detector
        light = np.pad(light, ((0, 0), (0, 0), (m, m), (m, m)))  # dark pixels around
        noisy = add_noise(
            light, np.array([self.frames_taken]), self.seed, stream_id("bench"),
            det.photons, det.read_noise_e, int(self.engine.detector_mask.sum()),
        )  # fmt: skip
        self.frames_taken += 1
        electrons = noisy[0] * self._per_pixel
        return np.round(electrons / self.gain_e_per_adu + self.bias_adu)
