"""Independent reference: the same ZWFS built from POPPY's own classes.

POPPY's stock `CircularPhaseMask` has no effect inside `SemiAnalyticCoronagraph`
(its Babinet term uses 1 - T of the mask amplitude), and `MatrixFTCoronagraph`
acts as a field stop. The model that is right: `SemiAnalyticCoronagraph` over the
planes [pupil, pupil (OPD), image (dot), pupil (Lyot), detector], fpm_index=2,
with an image-plane element whose complex transmission is exp(i theta) inside the
dot and 1 outside, so that the Babinet factor 1 - T is (1 - exp(i theta)) * dot.
The re-imaged pupil field is read from `return_intermediates`.

Only this module (used by `sim check`, `sim bench`, `sim generate --engine poppy` and the
tests) imports POPPY, through `import_poppy`, which keeps POPPY on NumPy: POPPY switches
to CuPy whenever CuPy imports, and its CuPy arrays would not mix with the NumPy here.
"""

from __future__ import annotations

import numpy as np
import torch

from data.schema import pupil_mask
from sim.config import SimConfig
from sim.detector import bin_frames
from sim.mask import dot_footprint, dot_phase_rad
from sim.poppy_numpy import import_poppy
from sim.pupil import pupil_segments, pupil_transmission

poppy = import_poppy()
import astropy.units as u  # noqa: E402  (after POPPY is on NumPy)
from poppy.optics import AnalyticImagePlaneElement  # noqa: E402

__all__ = ["PoppyZWFS", "import_poppy", "poppy_pupil"]

_RAD_TO_ARCSEC = 180 / np.pi * 3600
_LYOT_INTERMEDIATE = 5  # index of the recombined Lyot-plane wavefront in SAMC's intermediates


class _PhaseDot(AnalyticImagePlaneElement):
    """Focal phase dot: transmission exp(i theta(lambda)) inside, 1 outside."""

    def __init__(self, cfg: SimConfig, lam_d_arcsec: float, antialias: bool) -> None:
        super().__init__(name="ZWFS phase dot")
        self._cfg = cfg
        self._lam_d_arcsec = lam_d_arcsec
        self._antialias = antialias

    def get_transmission(self, wave: poppy.Wavefront) -> np.ndarray:
        _, x = self.get_coordinates(wave)  # arcsec
        coords = x[0] / self._lam_d_arcsec  # [lambda0/D]; POPPY's grid is symmetric
        footprint = dot_footprint(coords, self._cfg.mask.diameter_lambda0_d, self._antialias)
        wavelength_um = wave.wavelength.to_value(u.um)
        theta = dot_phase_rad([wavelength_um], self._cfg.mask)[0]
        self.transmission = 1 + footprint * (np.exp(1j * theta) - 1)
        return self.transmission

    def get_opd(self, wave: poppy.Wavefront) -> np.ndarray:
        return np.zeros(wave.shape)


def poppy_pupil(cfg: SimConfig, oversample: int = 16) -> np.ndarray:
    """POPPY's own aperture for the config's pupil geometry (N, N): its 0/1 samples on a
    grid `oversample` times finer, averaged over each pixel.

    Independent of `sim.apertures` but for the segments' flat-to-flat, which the engine
    derives from the circumscribed diameter. Each straight or round edge through a pixel
    misplaces at most `oversample` of its oversample^2 samples: |error| <= 1/oversample
    per edge in the pixel.
    """
    p = cfg.pupil
    n, diam = p.npix * oversample, p.diameter_m
    wave = poppy.Wavefront(diam=diam * u.m, npix=n, oversample=1)
    if p.geometry == "segmented":
        seg = pupil_segments(p)
        optics = [poppy.MultiHexagonAperture(
            flattoflat=seg.flat_to_flat_m * u.m, gap=p.segment_gap_m * u.m,
            rings=p.segment_rings, center=p.segment_centre,
        )]  # fmt: skip
    else:
        optics = [poppy.CircularAperture(radius=diam / 2 * u.m, gray_pixel=False)]
        if p.geometry == "obstructed":
            optics.append(poppy.SecondaryObscuration(
                secondary_radius=p.obstruction_ratio * diam / 2 * u.m, n_supports=p.spiders,
                support_width=p.spider_width_m * u.m, support_angle_offset=p.spider_angle_deg,
            ))  # fmt: skip
    fine = np.ones((n, n))
    for optic in optics:
        fine = fine * np.asarray(optic.get_transmission(wave), dtype=np.float64)
    return fine.reshape(p.npix, oversample, p.npix, oversample).mean(axis=(1, 3))


class PoppyZWFS:
    """POPPY model of the configured ZWFS, one wavefront and wavelength per call (slow).

    pupil: "engine" (the engine's exact-area pupil: the optics alone are compared) or
    "poppy" (POPPY's own aperture, `poppy_pupil` at `oversample`).
    """

    def __init__(
        self,
        cfg: SimConfig,
        antialias: bool | None = None,
        pupil: str = "engine",
        oversample: int = 16,
    ) -> None:
        self.cfg = cfg
        antialias = cfg.focal.antialias if antialias is None else antialias
        npix, diam = cfg.pupil.npix, cfg.pupil.diameter_m
        if pupil not in ("engine", "poppy"):
            raise ValueError(f"pupil must be engine or poppy, got {pupil!r}")
        self.pupil = pupil_transmission(cfg.pupil) if pupil == "engine" else (
            poppy_pupil(cfg, oversample))  # fmt: skip
        self._pixelscale = diam / npix * u.m / u.pixel
        lam_d_arcsec = cfg.mask.lambda0_um * 1e-6 / diam * _RAD_TO_ARCSEC
        q = cfg.focal.samples_per_lambda0_d
        self._dot = _PhaseDot(cfg, lam_d_arcsec, antialias)
        self._samc_args = dict(
            oversample=q,
            occulter_box=cfg.focal_box_samples / (2 * q) * lam_d_arcsec,
            fpm_index=2,
        )
        self._detector_scale = lam_d_arcsec
        binned = bin_frames(torch.as_tensor(self.pupil), cfg.detector.binning).numpy()
        self._detector_mask = pupil_mask(binned)
        clear = bin_frames(torch.as_tensor(self.pupil**2), cfg.detector.binning).numpy()
        self._clear_mean = clear[self._detector_mask].mean()

    def _system(self, opd_nm: np.ndarray) -> poppy.SemiAnalyticCoronagraph:
        osys = poppy.OpticalSystem(
            npix=self.cfg.pupil.npix, pupil_diameter=self.cfg.pupil.diameter_m * u.m, oversample=1
        )
        osys.add_pupil(
            poppy.ArrayOpticalElement(
                transmission=self.pupil, pixelscale=self._pixelscale, name="pupil"
            )
        )
        osys.add_pupil(
            poppy.ArrayOpticalElement(
                opd=np.asarray(opd_nm, dtype=np.float64) * 1e-9,
                transmission=np.ones_like(self.pupil),
                pixelscale=self._pixelscale,
                name="aberration",
            )
        )
        osys.add_image(self._dot)
        osys.add_pupil(poppy.ScalarTransmission(planetype=poppy.poppy_core.PlaneType.pupil))
        osys.add_detector(pixelscale=self._detector_scale, fov_pixels=2)
        return poppy.SemiAnalyticCoronagraph(osys, **self._samc_args)

    def field(self, opd_nm: np.ndarray, wavelength_um: float) -> np.ndarray:
        """Complex re-imaged pupil field (N, N), amplitude in units of the entrance field."""
        samc = self._system(opd_nm)
        wave = samc.input_wavefront(wavelength_um * 1e-6 * u.m)
        _, steps = samc.propagate(wave, normalize="first", return_intermediates=True)
        entrance = steps[0].wavefront
        scale = np.sqrt(np.sum(np.abs(self.pupil) ** 2) / np.sum(np.abs(entrance) ** 2))
        return steps[_LYOT_INTERMEDIATE].wavefront * scale

    def intensity(self, opd_nm: np.ndarray, wavelength_um: float) -> np.ndarray:
        """Normalised ZWFS intensity (N/b, N/b) for one OPD map [nm] at one wavelength."""
        field = self.field(opd_nm, wavelength_um)
        frame = torch.as_tensor(np.abs(field) ** 2)
        return bin_frames(frame, self.cfg.detector.binning).numpy() / self._clear_mean
