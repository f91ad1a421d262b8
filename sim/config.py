"""Validated configuration of the simulated ZWFS system (every number is a field).

Lengths carry their unit in the field name (`_m`, `_um`, `_nm`); YAML files in
`configs/sim/` hold the defaults. A wrong value raises `ConfigError` with one line
that names the field and what is allowed.
"""

from __future__ import annotations

import math
import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from common.config import (
    WAVELENGTH_RANGE_UM,
    ConfigError,
    apply_dotted,
    check_wavelengths_um,
    read_yaml_mapping,
    validate_model,
)

__all__ = [
    "AberrationConfig",
    "ConfigError",
    "DetectorConfig",
    "FocalConfig",
    "MaskConfig",
    "PupilConfig",
    "SimConfig",
    "TolerancesConfig",
    "load_sim_config",
    "system_sim_config",
    "validate_sim_config",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PupilConfig(_Strict):
    """The pupil: circular, obstructed or hexagonally segmented (`sim.apertures`), inside
    a circle of `diameter_m`; the array width equals that diameter."""

    diameter_m: float = Field(6.0, gt=0, description="pupil (circumscribed) diameter [m]")
    npix: int = Field(128, ge=8, le=2048, description="pixels across the pupil")
    geometry: Literal["circular", "obstructed", "segmented"] = Field(
        "circular",
        description="circular: a clear disk; obstructed: a central obstruction and spiders; "
        "segmented: hexagonal segments (segment_rings, segment_gap_m, segment_centre)",
    )
    obstruction_ratio: float = Field(
        0.14, ge=0, lt=0.9, description="obstructed: obstruction diameter / pupil diameter"
    )
    spiders: int = Field(4, ge=0, le=12, description="obstructed: number of spiders")
    spider_width_m: float = Field(0.05, gt=0, description="obstructed: spider width [m]")
    spider_angle_deg: float = Field(
        0.0, description="obstructed: angle of the first spider from +x [deg] (as POPPY's)"
    )
    segment_rings: int = Field(
        2, ge=1, le=6, description="segmented: rings of hexagons around the centre"
    )
    segment_gap_m: float = Field(0.01, ge=0, description="segmented: gap between segments [m]")
    segment_centre: bool = Field(
        False, description="segmented: whether the central segment is there"
    )
    amplitude_rms: float = Field(
        0.0, ge=0, le=0.5,
        description="illumination: fractional RMS of the clear-pupil intensity over the pupil "
        "(a smooth random map of Noll 2-11 shapes); 0: evenly lit",
    )  # fmt: skip
    amplitude_per_sample: bool = Field(
        False, description="illumination: a new map per sample (else one per file, seeded)"
    )


class AberrationConfig(_Strict):
    """Zernike OPD: which Noll modes and how large (nm RMS over the pupil)."""

    noll_min: int = Field(2, ge=1, description="first Noll index (2 excludes piston)")
    noll_max: int = Field(36, ge=1, le=1000, description="last Noll index")
    distribution: Literal["uniform", "power_law", "single_mode", "grid"] = "uniform"
    rms_min_nm: float = Field(0.0, ge=0, description="smallest OPD RMS [nm]")
    rms_max_nm: float = Field(
        500.0, ge=0, le=1e5, description="largest OPD RMS [nm] (0: no global aberration)"
    )
    segment_piston_nm: float = Field(
        0.0, ge=0, le=1e5,
        description="segmented pupils: segment pistons [nm OPD], uniform in +- this",
    )  # fmt: skip
    segment_tiptilt_nm: float = Field(
        0.0, ge=0, le=1e4,
        description="segmented pupils: segment tip and tilt [nm RMS over the segment], "
        "uniform in +- this",
    )  # fmt: skip
    segment_scale: Literal["fixed", "uniform"] = Field(
        "fixed",
        description="segmented pupils: fixed: every sample draws in the full ranges; "
        "uniform: each sample's ranges scaled by its own factor, uniform in [0, 1] (a test "
        "set that covers 0 to the range, for the piston capture range)",
    )
    power_law_index: float = Field(
        2.0, ge=0, description="power_law: mode std scales as (radial order)^-index"
    )
    single_mode: int = Field(4, ge=1, description="single_mode: the Noll index used")
    kind: Literal["modes", "screen", "mixture", "blend"] = Field(
        "modes",
        description="modes: Noll modes; screen: power-law phase screens; mixture: modes plus "
        "a screen beyond them (high_order_rms_nm); blend: each sample one of the three "
        "(blend_weights)",
    )
    screen_index: float = Field(2.0, gt=0, le=6, description="screen: PSD proportional to f^-index")
    outer_scale_m: float | None = Field(
        None, gt=0, description="screen: outer scale [m]; None: the generating grid's size"
    )
    high_order_rms_nm: float = Field(
        20.0, ge=0, le=1e4, description="mixture: RMS [nm] of the screen beyond the modes"
    )
    blend_weights: list[float] = Field(
        default_factory=lambda: [1.0, 1.0, 1.0],
        description="blend: relative shares of modes, screen and mixture samples",
    )

    @model_validator(mode="after")
    def _ranges(self) -> AberrationConfig:
        if self.noll_max < self.noll_min:
            raise ValueError(
                f"aberration.noll_max ({self.noll_max}) must be >= noll_min ({self.noll_min})"
            )
        if self.rms_max_nm < self.rms_min_nm:
            raise ValueError(
                f"aberration.rms_max_nm ({self.rms_max_nm}) must be >= "
                f"rms_min_nm ({self.rms_min_nm})"
            )
        if (
            len(self.blend_weights) != 3
            or min(self.blend_weights) < 0
            or not any(self.blend_weights)
        ):
            raise ValueError(
                "aberration.blend_weights must be 3 shares >= 0 (modes, screen, mixture), "
                f"not all 0, got {self.blend_weights}"
            )
        if self.distribution == "single_mode" and not (
            self.noll_min <= self.single_mode <= self.noll_max
        ):
            raise ValueError(
                f"aberration.single_mode ({self.single_mode}) must lie in "
                f"[noll_min, noll_max] = [{self.noll_min}, {self.noll_max}]"
            )
        return self

    @property
    def modes(self) -> list[int]:
        """Noll indices of the basis, in order."""
        return list(range(self.noll_min, self.noll_max + 1))


class MaskConfig(_Strict):
    """Focal-plane phase dot (diameter in lambda0/D, depth as OPD in nm)."""

    diameter_lambda0_d: float = Field(1.06, gt=0, le=20, description="dot diameter [lambda0/D]")
    opd_depth_nm: float = Field(250.0, description="dot OPD depth [nm]: pi/2 at 1 um")
    lambda0_um: float = Field(1.0, description="reference wavelength [um]")
    substrate: Literal["achromatic_opd", "fused_silica"] = Field(
        "achromatic_opd",
        description="achromatic_opd: theta = 2 pi depth / lambda; fused_silica: "
        "depth scaled by (n(lambda) - 1) / (n(lambda0) - 1)",
    )

    @model_validator(mode="after")
    def _lambda0(self) -> MaskConfig:
        lo, hi = WAVELENGTH_RANGE_UM
        if not lo <= self.lambda0_um <= hi:
            raise ValueError(f"mask.lambda0_um ({self.lambda0_um}) must lie in [{lo}, {hi}] um")
        return self


class FocalConfig(_Strict):
    """Sampling of the small focal-plane box that holds the dot (Babinet MFT)."""

    samples_per_lambda0_d: float = Field(32.0, ge=2, le=512, description="[samples/(lambda0/D)]")
    box_samples: int | None = Field(
        None, ge=4, description="samples across the focal box; None: just covers the dot"
    )
    antialias: bool = Field(
        True, description="grey dot-edge samples: each holds the exact area the dot covers"
    )
    antialias_subsamples: int = Field(
        16, ge=1, le=64,
        description="unused: the dot's edge samples hold exact areas (kept so that the "
        "configs of files made when they were sub-sampled still load)",
    )  # fmt: skip


class TolerancesConfig(_Strict):
    """Per-sample errors of the dot and the alignment, drawn uniformly within +- these
    (training on them makes a network hold on a real bench); 0: the nominal system."""

    diameter: float = Field(0.0, ge=0, le=0.5, description="dot diameter: fraction of the config's")
    depth: float = Field(0.0, ge=0, le=0.5, description="dot depth: fraction of the config's")
    shift_px: float = Field(0.0, ge=0, le=8, description="pupil shift in x and y [px]")
    pupil_scale: float = Field(0.0, ge=0, le=0.2, description="pupil radius: fraction")

    @property
    def active(self) -> bool:
        return any((self.diameter, self.depth, self.shift_px, self.pupil_scale))


class DetectorConfig(_Strict):
    """Re-imaged pupil detector: binning and noise."""

    binning: int = Field(1, ge=1, le=16, description="b x b pixel binning")
    photons: float | None = Field(
        None, gt=0, description="photons in the clear pupil per frame; None: no photon noise"
    )
    read_noise_e: float = Field(0.0, ge=0, description="Gaussian read noise [e- per pixel]")


class SimConfig(_Strict):
    """The whole simulated system; `configs/sim/paper.yaml` holds the paper's values."""

    pupil: PupilConfig = PupilConfig()
    aberration: AberrationConfig = AberrationConfig()
    mask: MaskConfig = MaskConfig()
    wavelengths_um: list[float] = Field(default_factory=lambda: [0.96, 0.98, 1.00, 1.20])
    focal: FocalConfig = FocalConfig()
    detector: DetectorConfig = DetectorConfig()
    tolerances: TolerancesConfig = TolerancesConfig()
    precision: Literal["complex64", "complex128"] = "complex64"
    seed: int = Field(0, ge=0, description="base seed of the aberration draws")

    @model_validator(mode="after")
    def _consistency(self) -> SimConfig:
        check_wavelengths_um(self.wavelengths_um, "wavelengths_um")
        ab = self.aberration
        if (ab.segment_piston_nm or ab.segment_tiptilt_nm) and self.pupil.geometry != "segmented":
            raise ValueError(
                "aberration.segment_piston_nm and segment_tiptilt_nm need "
                f"pupil.geometry: segmented (got {self.pupil.geometry})"
            )
        if self.pupil.geometry != "circular" and (
            self.tolerances.shift_px or self.tolerances.pupil_scale
        ):
            raise ValueError(
                "tolerances.shift_px and pupil_scale are modelled for the circular pupil "
                f"only (pupil.geometry is {self.pupil.geometry})"
            )
        if self.pupil.npix % self.detector.binning:
            raise ValueError(
                f"pupil.npix ({self.pupil.npix}) must be a multiple of "
                f"detector.binning ({self.detector.binning})"
            )
        box = self.focal_box_samples
        needed = self.mask.diameter_lambda0_d * self.focal.samples_per_lambda0_d
        if box < needed:
            raise ValueError(
                f"focal.box_samples ({box}) is smaller than the mask "
                f"({needed:.1f} samples = {self.mask.diameter_lambda0_d} lambda0/D x "
                f"{self.focal.samples_per_lambda0_d} samples per lambda0/D)"
            )
        return self

    @property
    def focal_box_samples(self) -> int:
        """Samples across the focal box: the given value, or the dot plus one sample."""
        if self.focal.box_samples is not None:
            return self.focal.box_samples
        dot = self.mask.diameter_lambda0_d * self.focal.samples_per_lambda0_d
        return math.ceil(dot) + 2

    @property
    def realistic(self) -> bool:
        """True when samples differ in more than their OPD (illumination or tolerances)."""
        return self.pupil.amplitude_rms > 0 or self.tolerances.active

    @property
    def wavelengths_m(self) -> list[float]:
        """Wavelengths [m], in the order of the recurrent axis."""
        return [w * 1e-6 for w in self.wavelengths_um]

    @property
    def pixel_scale_m(self) -> float:
        """Pupil-plane pixel pitch [m] before binning."""
        return self.pupil.diameter_m / self.pupil.npix

    def with_overrides(self, **dotted: Any) -> SimConfig:
        """Copy with fields replaced by dotted names, e.g. ``{"pupil.npix": 64}``; validated."""
        return validate_sim_config(apply_dotted(self.model_dump(), dotted, "sim"))


def validate_sim_config(data: dict[str, Any]) -> SimConfig:
    """Build a `SimConfig` from plain data; raise `ConfigError` with a one-line message."""
    return validate_model(SimConfig, data, "sim")


def load_sim_config(name_or_path: str | os.PathLike = "paper") -> SimConfig:
    """Load a YAML config by path, or a packaged one by name ("paper", "quick"); a system
    file (``kind: zwfs-system``, `sim.system_file`) is converted."""
    data = read_yaml_mapping(name_or_path, "sim")
    if data.get("kind") == "zwfs-system":
        return system_sim_config(data)
    return validate_sim_config(data)


def system_sim_config(system: Any) -> SimConfig:
    """The `SimConfig` of a system file (`sim.system_file.SystemFile` or its mapping)."""
    from sim.system_file import system_mapping

    return validate_sim_config(system_mapping(system))
