"""The file of a reconstruction: OPD maps [nm] and Noll coefficients, as FITS or HDF5.

FITS: the OPD maps in the primary HDU (BUNIT nm; WAVEi the input wavelengths [m]), then
COEFFS (nm RMS per mode), MODES (Noll indices) and PUPIL. HDF5: datasets opd,
coefficients, mode, wavelength and pupil, each with its units. Both carry the sign and
normalisation conventions (`data.conventions`). Written under a
temporary name and renamed: never half-written under the final name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import NamedTuple

import h5py
import numpy as np

from data.conventions import CONVENTIONS, fits_cards

__all__ = ["PredictionArrays", "write_prediction_file"]


class PredictionArrays(NamedTuple):
    """opd_nm (B, H, W) [nm]; coefficients_nm (B, M) [nm RMS]; modes (M,) Noll j;
    wavelengths_m (L,) of the input frames; pupil (H, W) transmission."""

    opd_nm: np.ndarray
    coefficients_nm: np.ndarray
    modes: np.ndarray
    wavelengths_m: np.ndarray
    pupil: np.ndarray


def write_prediction_file(out: str | os.PathLike, source: str, arrays: PredictionArrays) -> Path:
    """Write a reconstruction: FITS (.fits) or HDF5 (.h5) by the suffix of `out`;
    `source` names the frames."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    if out.suffix.lower() in (".fits", ".fit", ".fts"):
        _write_fits(tmp, source, arrays)
    elif out.suffix.lower() in (".h5", ".hdf5"):
        _write_h5(tmp, source, arrays)
    else:
        raise ValueError(f"output {out} must end in .fits or .h5")
    os.replace(tmp, out)
    return out


def _write_fits(path: Path, source: str, arrays: PredictionArrays) -> None:
    from astropy.io import fits

    opd_nm, coefficients_nm, modes, wavelengths_m, pupil = arrays
    primary = fits.PrimaryHDU(opd_nm)
    primary.header["BUNIT"] = ("nm", "optical path difference, piston removed")
    primary.header["SOURCE"] = (source[-68:], "frames the OPD was reconstructed from")
    for i, w in enumerate(wavelengths_m):
        primary.header[f"WAVE{i}"] = (float(w), "[m] wavelength of input channel")
    for key, value, comment in fits_cards():
        primary.header[key] = (value, comment)
    coeffs = fits.ImageHDU(coefficients_nm, name="COEFFS")
    coeffs.header["BUNIT"] = ("nm", "RMS per Noll Zernike mode")
    coeffs.header["NOLL0"] = (int(modes[0]), "Noll index of the first column")
    fits.HDUList(
        [primary, coeffs, fits.ImageHDU(modes, name="MODES"), fits.ImageHDU(pupil, name="PUPIL")]
    ).writeto(path, overwrite=True)


def _write_h5(path: Path, source: str, arrays: PredictionArrays) -> None:
    units = {"opd": "nm", "coefficients": "nm", "mode": "Noll index", "wavelength": "m"}
    names = ("opd", "coefficients", "mode", "wavelength", "pupil")
    with h5py.File(path, "w") as f:
        f.attrs["source"] = source
        f.attrs["conventions"] = json.dumps(CONVENTIONS)
        for name, data in zip(names, arrays, strict=True):
            f.create_dataset(name, data=data).attrs["units"] = units.get(name, "1")
