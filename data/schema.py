"""The dataset format: variables, dimensions, dtypes, units, root attributes, errors,
and `create_layout`, which lays the tables out as an HDF5 file.

One HDF5 file (netCDF4-compatible: dimension scales) per split. The tables below are
the single source of truth that the writer, the readers and the tests all use.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5netcdf
import h5py
import numpy as np

from common.errors import KnownError
from common.provenance import package_versions as common_package_versions
from common.provenance import utc_now_iso

__all__ = [
    "ABERRATION_CLASSES",
    "COORDINATES",
    "FINGERPRINTED_ATTRS",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "OPTIONAL_VARIABLES",
    "PER_SAMPLE",
    "PUPIL_THRESHOLD",
    "REQUIRED_ATTRS",
    "SEGMENT_TERMS",
    "STATIC",
    "SYSTEM_FIELD_COUNT",
    "VARIABLES",
    "DatasetError",
    "DatasetExistsError",
    "DiskSpaceError",
    "IncompleteDatasetError",
    "OutputFolderError",
    "ResumeError",
    "SchemaError",
    "VarSpec",
    "create_layout",
    "fill_value",
    "fingerprint",
    "package_versions",
    "pixel_centres_m",
    "pupil_mask",
    "root_attrs",
    "storable_attr",
]

FORMAT_NAME = "zwfs-dataset"
FORMAT_VERSION = 1
PUPIL_THRESHOLD = 0.5
"""A pixel is inside the pupil when its transmission is at least this: every RMS, metric
and normalisation statistic of the project uses this one definition."""
TARGET_CHUNK_BYTES = 256 * 1024
"""Per-sample variables hold k samples per chunk, k = max(1, this // bytes per sample)."""


@dataclass(frozen=True)
class VarSpec:
    """One variable of the file: dimension names, numpy dtype, `units` and `long_name`."""

    dims: tuple[str, ...]
    dtype: str
    units: str
    long_name: str

    @property
    def per_sample(self) -> bool:
        """True when the first dimension is `sample` (written batch by batch)."""
        return bool(self.dims) and self.dims[0] == "sample"


COORDINATES: dict[str, VarSpec] = {
    "sample": VarSpec(("sample",), "int64", "1", "sample index"),
    "wavelength": VarSpec(("wavelength",), "float64", "m", "wavelength"),
    "mode": VarSpec(("mode",), "int32", "1", "Noll index j of the Zernike mode"),
    "y": VarSpec(("y",), "float64", "m", "pupil-plane y of the pixel centre"),
    "x": VarSpec(("x",), "float64", "m", "pupil-plane x of the pixel centre"),
}

VARIABLES: dict[str, VarSpec] = {
    "intensity": VarSpec(
        ("sample", "wavelength", "y", "x"),
        "float32",
        "1",
        "intensity normalised by the mean clear-pupil intensity",
    ),
    "opd": VarSpec(
        ("sample", "y", "x"), "float32", "nm", "optical path difference (0 outside the pupil)"
    ),
    "coefficients": VarSpec(
        ("sample", "mode"), "float32", "nm", "Zernike coefficient (nm RMS per Noll mode)"
    ),
    "rms": VarSpec(("sample",), "float32", "nm", "OPD RMS over the pupil"),
    "pupil": VarSpec(("y", "x"), "float32", "1", "pupil transmission"),
    "reference_clear": VarSpec(
        ("wavelength", "y", "x"),
        "float32",
        "1",
        "clear pupil (no mask, no aberration), normalised intensity",
    ),
    "reference_zwfs": VarSpec(
        ("wavelength", "y", "x"),
        "float32",
        "1",
        "ZWFS with no aberration, normalised intensity",
    ),
}

PER_SAMPLE: tuple[str, ...] = tuple(k for k, v in VARIABLES.items() if v.per_sample)
STATIC: tuple[str, ...] = tuple(k for k, v in VARIABLES.items() if not v.per_sample)

ABERRATION_CLASSES = ("modes", "screen", "mixture")
"""Values 0, 1, 2 of `aberration_class`: Noll modes; a power-law phase screen; Noll modes
plus a screen restricted to beyond them (the modal part is the file's coefficients)."""
SYSTEM_FIELD_COUNT = 5
SEGMENT_TERMS = ("piston", "tip", "tilt")
"""The terms of a segment's aberration, in order (`segment_term` dimension)."""
"""Entries of a sample's `system`: dot diameter and depth scales, pupil shift x and y
[px], pupil scale (the order of `sim.system.SYSTEM_FIELDS`)."""

OPTIONAL_VARIABLES: dict[str, VarSpec] = {
    "aberration_class": VarSpec(
        ("sample",), "int8", "1", "aberration class: 0 Noll modes, 1 screen, 2 modes + screen"
    ),
    "system": VarSpec(
        ("sample", "system_field"),
        "float32",
        "1",
        "the sample's system: dot diameter and depth scales, pupil shift x, y [px], pupil scale",
    ),
    "segment_coefficients": VarSpec(
        ("sample", "segment", "segment_term"),
        "float32",
        "nm",
        "per-segment piston [nm OPD], tip and tilt [nm RMS over the segment] (x and y slopes)",
    ),
    "clear": VarSpec(
        ("sample", "wavelength", "y", "x"),
        "float32",
        "1",
        "the sample's clear-pupil frame (its illumination and pupil), normalised intensity",
    ),
}
"""Per-sample variables a file holds only when its simulation varies them (realism)."""

REQUIRED_ATTRS: dict[str, type] = {"config": str, "engine": str, "seed": int, "split": str}
"""Root attributes the caller must give; the writer adds `versions` (when absent),
`created`, `n_samples`, `n_complete`, `sample_offset`, `pixel_scale_m`, `fingerprint`,
`format` and `format_version`."""
FINGERPRINTED_ATTRS = ("device",)
"""Optional root attributes that decide the samples too: `device`, the torch device type
("cpu", "cuda") of a simulation (the engine's rounding and the noise generators differ),
so that a resume on another device is refused instead of mixing the two in one file."""


class DatasetError(KnownError):
    """Base of every dataset error; `str(err)` is one line fit for a command line."""


class DatasetExistsError(DatasetError):
    """The final file (or a partial run of it) exists and would be overwritten."""


class ResumeError(DatasetError):
    """A partial file cannot be resumed (missing, corrupt, or a different run)."""


class IncompleteDatasetError(DatasetError):
    """The file holds fewer complete samples than planned."""


class DiskSpaceError(DatasetError):
    """Not enough free disk space for the planned file."""


class OutputFolderError(DatasetError):
    """The output folder cannot be created or written."""


class SchemaError(DatasetError):
    """A file does not follow the dataset schema."""


def pixel_centres_m(npix: int, pixel_scale_m: float) -> np.ndarray:
    """Pixel-centre coordinates [m] along one axis, symmetric about 0."""
    return (np.arange(npix, dtype=np.float64) - (npix - 1) / 2.0) * float(pixel_scale_m)


def package_versions() -> dict[str, str]:
    """Versions of Python, the installed packages and the HDF5 library (no imports)."""
    return {**common_package_versions(), "hdf5": h5py.version.hdf5_version}


def fill_value(dtype: np.dtype) -> Any:
    """What an unwritten element reads as: NaN for floats, -1 for integers."""
    return dtype.type(np.nan) if dtype.kind == "f" else dtype.type(-1)


def pupil_mask(pupil: np.ndarray) -> np.ndarray:
    """Boolean (H, W): the pixels counted as inside the pupil (transmission >= 0.5)."""
    return np.asarray(pupil) >= PUPIL_THRESHOLD


def storable_attr(key: str, value: Any) -> str | int | float | bool:
    """An attribute value as stored: mappings and lists become sorted JSON strings."""
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, sort_keys=True, default=str)
    if isinstance(value, np.generic):
        value = value.item()
    if not isinstance(value, str | int | float | bool):
        raise ValueError(f"attrs[{key!r}] must be a str, number or JSON-able mapping")
    return value


def fingerprint(
    attrs: Mapping[str, Any],
    *,
    n_samples: int,
    sample_offset: int,
    wavelengths_m: Sequence[float],
    modes: Sequence[int],
    npix: int,
    pixel_scale_m: float,
    optional: Sequence[str] = (),
) -> str:
    """SHA-256 (hex) of what decides the samples: config, seed, engine, split, the device
    type when given (`FINGERPRINTED_ATTRS`) and the layout.

    Versions and creation time are left out, so a resumed run on upgraded packages
    still matches; any other difference means the partial file belongs to another run.
    """
    missing = [k for k in REQUIRED_ATTRS if k not in attrs]
    if missing:
        raise ValueError(f"attrs is missing {missing}; required: {sorted(REQUIRED_ATTRS)}")
    payload = {
        **{k: storable_attr(k, attrs[k]) for k in REQUIRED_ATTRS},
        **{k: storable_attr(k, attrs[k]) for k in FINGERPRINTED_ATTRS if k in attrs},
        "n_samples": int(n_samples),
        "sample_offset": int(sample_offset),
        "wavelengths_m": [float(w) for w in wavelengths_m],
        "modes": [int(m) for m in modes],
        "npix": int(npix),
        "pixel_scale_m": float(pixel_scale_m),
    }
    if optional:  # files without optional variables keep their fingerprints
        payload["optional"] = sorted(optional)
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def root_attrs(
    attrs: Mapping[str, Any], *, n_samples: int, sample_offset: int, pixel_scale_m: float, fp: str
) -> dict[str, Any]:
    """Validated root attributes: the caller's (config, engine, seed, split, ...) + the writer's."""
    missing = [k for k in REQUIRED_ATTRS if k not in attrs]
    if missing:
        raise ValueError(f"attrs is missing {missing}; required: {sorted(REQUIRED_ATTRS)}")
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        out[key] = storable_attr(key, value)
    if isinstance(out["seed"], bool) or not isinstance(out["seed"], int):
        raise ValueError(f"attrs['seed'] must be an int, got {out['seed']!r}")
    out.setdefault("versions", json.dumps(package_versions(), sort_keys=True))
    out.update(
        created=utc_now_iso(),
        n_samples=int(n_samples),
        n_complete=0,
        sample_offset=int(sample_offset),
        pixel_scale_m=float(pixel_scale_m),
        fingerprint=fp,
        format=FORMAT_NAME,
        format_version=FORMAT_VERSION,
    )
    for key in ("n_samples", "n_complete", "sample_offset", "seed", "format_version"):
        out[key] = np.int64(out[key])
    return out


def _early_dcpl() -> h5py.h5p.PropDCID:
    """Dataset-creation list: all chunks allocated at creation, fill values never written.

    Allocation at creation freezes the chunk index, so later writes change raw bytes only;
    not writing fill values keeps creation instant (the unwritten space is a sparse hole).
    """
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
    return dcpl


def _chunks(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    per_sample = itemsize * int(np.prod(shape[1:], dtype=np.int64))
    k = max(1, min(shape[0], TARGET_CHUNK_BYTES // max(per_sample, 1)))
    return (k, *shape[1:])


def create_layout(
    path: Path,
    *,
    n_samples: int,
    sample_offset: int,
    wavelengths_m: np.ndarray,
    modes: np.ndarray,
    npix: int,
    pixel_scale_m: float,
    attrs: Mapping[str, Any],
    per_sample: bool = True,
    optional: Sequence[str] = (),
    segments: int = 0,
) -> None:
    """Create the whole file (coordinates, allocated variables, attributes) and close it.

    `per_sample=False` leaves out the per-sample variables (the shard combiner adds
    them as virtual datasets); `optional` names the `OPTIONAL_VARIABLES` the file holds;
    `segments`: the number of pupil segments (with "segment_coefficients").
    """
    sizes = {
        "sample": n_samples,
        "wavelength": len(wavelengths_m),
        "mode": len(modes),
        "y": npix,
        "x": npix,
    }
    if "system" in optional:
        sizes["system_field"] = SYSTEM_FIELD_COUNT
    if "segment_coefficients" in optional:
        if segments < 1:
            raise ValueError("segment_coefficients needs segments >= 1")
        sizes["segment"], sizes["segment_term"] = segments, len(SEGMENT_TERMS)
    yx = pixel_centres_m(npix, pixel_scale_m)
    coords = {
        "sample": np.arange(sample_offset, sample_offset + n_samples),
        "wavelength": wavelengths_m,
        "mode": modes,
        "y": yx,
        "x": yx,
    }
    with h5netcdf.File(path, "w") as f:
        f.dimensions = sizes
        for name, spec in COORDINATES.items():
            var = f.create_variable(name, spec.dims, data=coords[name].astype(spec.dtype))
            var.attrs.update(units=spec.units, long_name=spec.long_name)
        if "system_field" in sizes:
            f.create_variable(
                "system_field", ("system_field",), data=np.arange(SYSTEM_FIELD_COUNT)
            ).attrs.update(units="1", long_name="index of the system entry")
        if "segment" in sizes:
            f.create_variable(
                "segment", ("segment",), data=np.arange(sizes["segment"], dtype=np.int32)
            ).attrs.update(units="1", long_name="segment index (POPPY's order: +y, clockwise)")
            f.create_variable(
                "segment_term", ("segment_term",), data=np.arange(len(SEGMENT_TERMS))
            ).attrs.update(units="1", long_name="segment term: " + ", ".join(SEGMENT_TERMS))
        chosen = {**VARIABLES, **{k: OPTIONAL_VARIABLES[k] for k in optional}}
        for name, spec in chosen.items():
            if spec.per_sample and not per_sample:
                continue
            shape = tuple(sizes[d] for d in spec.dims)
            dtype = np.dtype(spec.dtype)
            var = f.create_variable(
                name,
                spec.dims,
                dtype=dtype,
                chunks=_chunks(shape, dtype.itemsize) if spec.per_sample else None,
                fillvalue=fill_value(dtype),
                dcpl=_early_dcpl(),
            )
            var.attrs.update(units=spec.units, long_name=spec.long_name)
        f.attrs.update(attrs)
