"""The units and signs of every file the project writes, in one place (docs/lab.md).

Datasets, reconstructions and calibrations carry `CONVENTIONS` (HDF5 attribute
``conventions``, JSON key ``conventions``); FITS files carry `fits_cards` as header keys.
"""

from __future__ import annotations

__all__ = ["CONVENTIONS", "fits_cards"]

CONVENTIONS: dict[str, str] = {
    "opd": "optical path difference [nm]; a positive OPD is a positive phase 2 pi OPD / "
    "lambda (POPPY's sign); piston removed over the pupil",
    "zernike": "Noll (1976) order and normalisation: every mode has unit RMS over the pupil, "
    "so coefficients are nm RMS and their root sum square is the OPD RMS",
    "dm": "a deformable mirror's surface is OPD / 2 in reflection: to cancel an OPD w, "
    "command the surface -w / 2",
    "array_order": "images are (row, column) = (y, x), row 0 first; FITS holds the same "
    "order (NAXIS1 = columns); shown with origin='lower', row 0 is at the bottom",
    "intensity": "frames divided by the mean clear-pupil intensity inside the pupil "
    "(transmission >= 0.5)",
}

_FITS = {  # key: (value, comment), each card within FITS's 80 characters
    "OPDSIGN": ("+phase", "positive OPD = positive phase 2pi OPD/lambda"),
    "ZERNNORM": ("Noll", "Noll 1976: unit RMS modes, coefficients nm RMS"),
    "DMREFL": (0.5, "DM surface = OPD x DMREFL in reflection"),
    "ROWORDER": ("y,x", "array (row, col); row 0 at bottom, origin=lower"),
}


def fits_cards() -> list[tuple[str, object, str]]:
    """(key, value, comment) header cards of `CONVENTIONS` for a FITS file."""
    return [(key, value, comment) for key, (value, comment) in _FITS.items()]
