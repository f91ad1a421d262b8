"""The noise options of commands that take lab frames: one rule for predict and calibrate."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from common.cli import UserError

__all__ = ["GainOpt", "check_noise_options", "describe_noise", "stated_noise"]

GainOpt = Annotated[
    float | None, typer.Option("--gain", min=0.0, help="camera gain [e-/ADU] of the FITS frames")
]


def check_noise_options(
    gain: float | None, photons: float | None, fits_frames: bool, needs: str | None = None
) -> None:
    """One-line errors: --gain is for FITS frames in ADU, and not with --photons; `needs`:
    the option the noise options need (e.g. "--refine"), when it is missing."""
    if needs is not None and (gain is not None or photons is not None):
        raise UserError(f"--photons, --read-noise and --gain need {needs} (they weigh the fit)")
    if gain is not None and (not fits_frames or photons is not None):
        raise UserError("--gain applies to FITS frames in ADU (--frames), without --photons")


def stated_noise(
    lab: Any, gain: float | None, photons: float | None, read_noise: float | None,
    pupil_pixels: int,
) -> Any:  # fmt: skip
    """The `NoiseModel` the options state for lab frames (`data.lab.LabFrames`), or None
    (nothing stated: measure it). --gain uses the clear frame's level [ADU]."""
    from recon.refine import NoiseModel

    if gain is not None:
        return NoiseModel.from_camera(lab.clear_level, gain, read_noise or 0.0, lab.pixel_area)
    if photons is not None:
        return NoiseModel.from_photons(photons, read_noise or 0.0, pupil_pixels)
    return None


def describe_noise(noise: Any, pupil_pixels: int, origin: str = "stated") -> str:
    """A `NoiseModel` in one line with units; `origin`: where it comes from."""
    if not noise.noisy:
        return "none (noiseless frames: least squares)"
    if not noise.poisson:
        return f"Gaussian read noise {noise.read_noise_e / noise.mean_counts:.3g} (normalised)"
    text = f"{noise.mean_counts * pupil_pixels:.3g} photons per frame and wavelength"
    return f"{text}, read noise {noise.read_noise_e:.3g} e- ({origin})"
