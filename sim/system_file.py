"""Your own ZWFS from one file, in the units of the lab (the optical designer's numbers).

A system file (``kind: zwfs-system``) holds what a lab knows of its ZWFS: the dot's
physical diameter [um] and the F-ratio at the mask (or its diameter in lambda0/D), its
physical depth [um] and substrate, the wavelengths, the pupil sampling on the camera
and its binning, and the camera's gain and read noise. `system_mapping` turns it into
the `SimConfig` that the engine, training, refinement and calibration run: any command
that takes ``--config`` takes a system file (`sim.config.load_sim_config` converts it
with `system_mapping`), and a
dataset made from it carries the converted config into every checkpoint trained on it.

Conversions (the dot in the mask plane, at the reference wavelength lambda0):
    diameter [lambda0/D] = diameter [um] / (F-ratio x lambda0 [um])
    OPD depth [nm] = (n(lambda0) - 1) x depth [um] x 1000   (fused silica: Malitson)
                   = depth [um] x 1000                       (achromatic_opd: the OPD itself)

`system_from_pyzelda` reads pyZELDA's instrument description (``pyzelda/instruments/
<NAME>.ini``: mask F-ratio, depth [m], diameter [m], substrate; pupil diameter [px]).
"""

from __future__ import annotations

import configparser
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from common.config import ConfigError, read_yaml_mapping, validate_model
from sim.materials import fused_silica_index

__all__ = [
    "SYSTEM_KIND",
    "DotSpec",
    "SystemFile",
    "load_system_file",
    "system_from_pyzelda",
    "system_mapping",
]

SYSTEM_KIND = "zwfs-system"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DotSpec(_Strict):
    """The focal-plane dot as built: give diameter_um with f_ratio, or diameter_lambda0_d."""

    diameter_um: float | None = Field(None, gt=0, description="physical diameter [um]")
    f_ratio: float | None = Field(None, gt=0, description="F-ratio of the beam at the mask")
    diameter_lambda0_d: float | None = Field(None, gt=0, le=20, description="[lambda0/D]")
    depth_um: float = Field(gt=0, description="physical depth [um] (achromatic_opd: the OPD)")
    substrate: Literal["fused_silica", "achromatic_opd"] = "fused_silica"
    lambda0_um: float = Field(gt=0, description="reference wavelength of lambda0/D [um]")

    @model_validator(mode="after")
    def _one_diameter(self) -> DotSpec:
        physical = self.diameter_um is not None and self.f_ratio is not None
        if physical == (self.diameter_lambda0_d is not None):
            raise ValueError(
                "dot: give diameter_um with f_ratio, or diameter_lambda0_d (one of the two)"
            )
        return self

    @property
    def lambda0_d(self) -> float:
        """Diameter [lambda0/D]."""
        if self.diameter_lambda0_d is not None:
            return self.diameter_lambda0_d
        return self.diameter_um / (self.f_ratio * self.lambda0_um)

    @property
    def opd_depth_nm(self) -> float:
        """OPD of the dot at lambda0 [nm]."""
        if self.substrate == "achromatic_opd":
            return self.depth_um * 1e3
        return float((fused_silica_index(np.array(self.lambda0_um)) - 1) * self.depth_um * 1e3)


class CameraSpec(_Strict):
    """The camera: pixels across the pupil, binning, gain and read noise."""

    pupil_px: int = Field(gt=0, description="camera pixels across the pupil")
    binning: int = Field(1, ge=1, le=16, description="b x b binning of the frames")
    gain_e_per_adu: float | None = Field(None, gt=0, description="[e-/ADU]")
    read_noise_e: float = Field(0.0, ge=0, description="[e- RMS per pixel]")
    photons: float | None = Field(None, gt=0, description="photons in the clear pupil per frame")


class SystemFile(_Strict):
    """A lab's ZWFS in one file (module docstring)."""

    kind: Literal["zwfs-system"] = SYSTEM_KIND
    name: str = Field(description="instrument name")
    telescope_diameter_m: float = Field(gt=0, description="pupil diameter on the sky [m]")
    wavelengths_um: list[float] = Field(min_length=1, description="[um], the network's order")
    dot: DotSpec
    camera: CameraSpec
    model_px: int | None = Field(
        None, ge=8, le=2048, description="pixels across the pupil the model and networks "
        "work at (frames are resampled to it) [camera pupil_px / binning]"
    )  # fmt: skip
    rms_max_nm: float = Field(300.0, gt=0, description="training: largest OPD RMS [nm]")
    noll_max: int = Field(36, ge=2, le=1000, description="training: last Noll index")

    @property
    def npix(self) -> int:
        """Pixels across the pupil in the model."""
        return self.model_px or self.camera.pupil_px // self.camera.binning


def load_system_file(name_or_path: str | os.PathLike) -> SystemFile:
    """Read a system file (a YAML path, or a packaged name in configs/sim/); one-line
    `ConfigError` on a bad one."""
    data = read_yaml_mapping(name_or_path, "sim")
    if data.get("kind") != SYSTEM_KIND:
        raise ConfigError(f"{name_or_path} is not a system file (no 'kind: {SYSTEM_KIND}')")
    return validate_model(SystemFile, data, "system")


def system_mapping(system: SystemFile | dict[str, Any]) -> dict[str, Any]:
    """The sim config (a mapping for `sim.config.validate_sim_config`) of a system file
    or its mapping, on configs/sim/quick.yaml's sampling and aberrations (Noll
    2..noll_max, 0..rms_max_nm); `sim.config.load_sim_config` converts with it."""
    if not isinstance(system, SystemFile):
        system = validate_model(SystemFile, system, "system")
    data = read_yaml_mapping("quick", "sim")
    data["pupil"] = {"diameter_m": system.telescope_diameter_m, "npix": system.npix}
    data["aberration"].update(noll_max=system.noll_max, rms_max_nm=system.rms_max_nm)
    data["mask"] = {
        "diameter_lambda0_d": system.dot.lambda0_d,
        "opd_depth_nm": system.dot.opd_depth_nm,
        "lambda0_um": system.dot.lambda0_um,
        "substrate": system.dot.substrate,
    }
    data["wavelengths_um"] = list(system.wavelengths_um)
    data["detector"] = {
        "binning": 1,
        "photons": system.camera.photons,
        "read_noise_e": system.camera.read_noise_e,
    }
    return data


def system_from_pyzelda(
    ini_path: str | os.PathLike,
    wavelengths_um: list[float],
    telescope_diameter_m: float,
    model_px: int | None = 64,
) -> SystemFile:
    """A system file from pyZELDA's instrument .ini (its [mask] and [pupil] sections);
    pyZELDA leaves the wavelength and the telescope to the analysis: give them."""
    parser = configparser.ConfigParser(inline_comment_prefixes=("#",))
    try:
        if not parser.read(ini_path):
            raise ConfigError(f"pyZELDA instrument file {ini_path} cannot be read")
        mask, pupil = parser["mask"], parser["pupil"]
        name = parser.get("instrument", "name", fallback=Path(ini_path).stem)
        dot = {
            "diameter_um": float(mask["diameter"]) * 1e6,
            "f_ratio": float(mask["Fratio"]),
            "depth_um": float(mask["depth"]) * 1e6,
            "substrate": mask.get("substrate", "fused_silica").strip(),
            "lambda0_um": wavelengths_um[0],
        }
        pupil_px = int(float(pupil["diameter"]))
    except (KeyError, ValueError, configparser.Error) as err:
        raise ConfigError(f"{ini_path} is not a pyZELDA instrument file: {err}") from None
    return validate_model(
        SystemFile,
        {"name": name, "telescope_diameter_m": telescope_diameter_m,
         "wavelengths_um": wavelengths_um, "dot": dot, "camera": {"pupil_px": pupil_px},
         "model_px": model_px},
        "system",
    )  # fmt: skip
