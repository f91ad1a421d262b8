"""Every file says its units and signs: datasets, reconstructions (FITS, HDF5), calibrations."""

from __future__ import annotations

import json

import h5py
import numpy as np
from astropy.io import fits

from data.conventions import CONVENTIONS, fits_cards
from data.predictions import PredictionArrays, write_prediction_file
from sim.config import load_sim_config
from sim.generate import generate_dataset


def _arrays() -> PredictionArrays:
    return PredictionArrays(np.zeros((1, 8, 8), np.float32), np.zeros((1, 3), np.float32),
                            np.arange(2, 5), np.array([1e-6]), np.ones((8, 8)))  # fmt: skip


def test_reconstructions_carry_the_conventions(tmp_path) -> None:
    fits_path = write_prediction_file(tmp_path / "p.fits", "frames.fits", _arrays())
    header = fits.getheader(fits_path)
    for key, value, _ in fits_cards():
        assert header[key] == value
    assert header["DMREFL"] == 0.5 and header["BUNIT"] == "nm"
    h5_path = write_prediction_file(tmp_path / "p.h5", "frames.fits", _arrays())
    with h5py.File(h5_path) as f:
        assert json.loads(f.attrs["conventions"]) == CONVENTIONS


def test_datasets_carry_the_conventions(tmp_path) -> None:
    cfg = load_sim_config("quick").with_overrides(**{"pupil.npix": 16, "wavelengths_um": [1.0]})
    path = generate_dataset(cfg, tmp_path / "d.h5", 2, device="cpu")
    with h5py.File(path) as f:
        conventions = json.loads(f.attrs["conventions"])
    assert "OPD / 2" in conventions["dm"] and "Noll" in conventions["zernike"]
