"""`recon predict` and the lab-script API: frames in, OPD [nm] and Noll coefficients out."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from astropy.io import fits
from typer.testing import CliRunner

from recon.cli import app
from recon.reconstructor import Reconstructor
from recon.train import load_train_config, train
from sim.config import load_sim_config
from sim.generate import generate_dataset

runner = CliRunner()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 32 px, 2-wavelength simulated set and a PhENN trained on it for one epoch."""
    folder = tmp_path_factory.mktemp("predict")
    cfg = load_sim_config("quick").with_overrides(
        **{"pupil.npix": 32, "wavelengths_um": [1.0, 1.2], "aberration.rms_max_nm": 200.0}
    )
    data = generate_dataset(cfg, folder / "train.h5", 24, device="cpu")
    tcfg = load_train_config("quick").with_overrides(
        **{"arch": "phenn", "data.train": str(data), "data.val": None,
           "out_dir": str(folder / "runs"), "epochs": 1, "batch_size": 8}
    )  # fmt: skip
    run = train(tcfg, enable_progress_bar=False, enable_model_summary=False)
    return data, run


def _camera(frame: np.ndarray, level: float, dark: float) -> np.ndarray:
    """A normalised (..., 32, 32) frame as raw counts in a 60 x 70 camera frame, off-centre."""
    raw = np.full((*frame.shape[:-2], 60, 70), dark, dtype=np.float64)
    raw[..., 11:43, 20:52] += level * frame
    return raw


def test_api_returns_opd_and_coefficients(setup) -> None:
    data, run = setup
    rec = Reconstructor.from_checkpoint(run)
    with h5py.File(data) as f:
        frames = f["intensity"][:3]
    result = rec(frames)
    assert result.opd_nm.shape == (3, 32, 32) and result.coefficients_nm.shape == (3, 35)
    inside = result.pupil > 0.5
    assert np.abs(result.opd_nm[:, inside].mean(axis=1)).max() < 1e-3  # piston free
    # the coefficients are the least-squares fit of the map: the fit leaves less than the map
    fit = np.einsum("bm,mhw->bhw", result.coefficients_nm, rec.basis)
    residual = (result.opd_nm - fit)[:, inside].std(axis=1)
    assert (residual < result.opd_nm[:, inside].std(axis=1)).all()
    with pytest.raises(ValueError, match="normalised"):
        rec(frames * 50)  # raw counts, not divided by the clear pupil


def test_fits_lab_frames_give_the_dataset_answer(setup, tmp_path) -> None:
    data, run = setup
    with h5py.File(data) as f:
        frames, clear = f["intensity"][:2], f["reference_clear"][...]
    dark = 100.0
    fits.writeto(tmp_path / "zwfs.fits", _camera(frames, 5000.0, dark))
    fits.writeto(tmp_path / "clear.fits", _camera(clear, 5000.0, dark))
    fits.writeto(tmp_path / "dark.fits", np.full((60, 70), dark))
    out = tmp_path / "result.fits"
    result = runner.invoke(
        app,
        ["predict", str(run), "--frames", str(tmp_path / "zwfs.fits"), "--clear",
         str(tmp_path / "clear.fits"), "--dark", str(tmp_path / "dark.fits"), "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    with fits.open(out) as hdus:
        lab_opd = hdus[0].data
        assert hdus[0].header["BUNIT"] == "nm" and hdus["COEFFS"].data.shape == (2, 35)
    h5_out = tmp_path / "result.h5"
    result = runner.invoke(
        app, ["predict", str(run), "--data", str(data), "--max-samples", "2", "--out", str(h5_out)]
    )
    assert result.exit_code == 0, result.output
    with h5py.File(h5_out) as f:
        sim_opd = f["opd"][...]
        assert f["opd"].attrs["units"] == "nm"
    # same frames, once through a camera frame and the lab loader: the same reconstruction
    scale = np.abs(sim_opd).max()
    assert np.abs(lab_opd - sim_opd).max() < 1e-3 * scale


def test_bad_requests_are_one_line(setup, tmp_path) -> None:
    data, run = setup
    neither = runner.invoke(app, ["predict", str(run)])
    assert neither.exit_code == 2 and "--frames" in neither.output
    wrong = runner.invoke(
        app, ["predict", str(run), "--data", str(data), "--out", str(tmp_path / "x.txt")]
    )
    assert wrong.exit_code != 0 and "Traceback" not in wrong.output
