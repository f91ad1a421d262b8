"""Lab frames from FITS: a synthetic disk pupil of known centre and diameter, with a dark."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from scipy import ndimage

from data import LabFrameError, load_lab_frames

H, W = 100, 120
CY, CX = 47.3, 61.8  # pupil centre [raw pixels], deliberately off the frame centre
RADIUS = 32.0  # pupil diameter 64 raw pixels
LEVELS = np.array([1000.0, 700.0])  # clear-pupil counts per wavelength
YY, XX = np.mgrid[0:H, 0:W].astype(np.float64)
DISK = (np.hypot(YY - CY, XX - CX) <= RADIUS).astype(np.float64)  # hard-edged pixels
DARK = 100.0 + 0.5 * XX  # sloped dark: wrong subtraction shows up as a gradient


def pattern(y: np.ndarray, x: np.ndarray, wl: int) -> np.ndarray:
    """Smooth known ZWFS-like pattern (the normalised intensity inside the pupil)."""
    return 1.0 + 0.4 * np.sin(2 * np.pi * (x - CX) / 37.0 + wl) * np.cos(
        2 * np.pi * (y - CY) / 53.0
    )


def write_fits(path: Path, data: np.ndarray) -> Path:
    fits.PrimaryHDU(data.astype(np.float32)).writeto(path)
    return path


@pytest.fixture
def fits_files(tmp_path: Path) -> dict[str, Path]:
    frames = np.stack([LEVELS[i] * DISK * pattern(YY, XX, i) for i in range(2)]) + DARK
    clear = LEVELS[:, None, None] * DISK + DARK
    return {
        "frames": write_fits(tmp_path / "frames.fits", frames),
        "clear": write_fits(tmp_path / "clear.fits", clear),
        "dark": write_fits(tmp_path / "dark.fits", DARK),
        "dir": tmp_path,
    }


def test_crop_is_centred_and_intensity_is_the_known_pattern(fits_files: dict[str, Path]) -> None:
    lab = load_lab_frames(fits_files["frames"], fits_files["clear"], fits_files["dark"])
    assert lab.centre == pytest.approx((CY, CX), abs=0.05)
    assert lab.diameter_px == pytest.approx(2 * RADIUS, abs=0.3)
    y0, y1, x0, x1 = lab.crop_box
    assert y1 - y0 == x1 - x0 == 64  # array width = pupil diameter, as the simulation
    assert abs((y0 + y1 - 1) / 2 - CY) <= 0.5 and abs((x0 + x1 - 1) / 2 - CX) <= 0.5
    assert lab.intensity.shape == (2, 64, 64) and lab.intensity.dtype == np.float32
    np.testing.assert_array_equal(lab.pupil, DISK[y0:y1, x0:x1] > 0)
    np.testing.assert_allclose(lab.clear_level, LEVELS, rtol=1e-5)
    for i in range(2):  # hard-edged clear pupil: the normalisation is exactly LEVELS[i]
        want = pattern(YY, XX, i)[y0:y1, x0:x1]
        np.testing.assert_allclose(lab.intensity[i][lab.pupil], want[lab.pupil], rtol=1e-5)
        np.testing.assert_allclose(lab.intensity[i][~lab.pupil], 0.0, atol=1e-4)
        assert lab.clear[i][lab.pupil].mean() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("npix", [32, 48])  # 32: 2x2 block average; 48: zoom by 0.75
def test_resampled_to_npix(fits_files: dict[str, Path], npix: int) -> None:
    lab = load_lab_frames(fits_files["frames"], fits_files["clear"], fits_files["dark"], npix=npix)
    assert lab.intensity.shape == (2, npix, npix) and lab.pupil.shape == (npix, npix)
    cy, cx = ndimage.center_of_mass(lab.pupil)
    assert abs(cy - (npix - 1) / 2) <= 0.5 and abs(cx - (npix - 1) / 2) <= 0.5
    y0, _, x0, _ = lab.crop_box
    step = 64 / npix  # raw pixels per output pixel; output pixel k is centred here:
    raw = y0 - 0.5 + (np.arange(npix) + 0.5) * step, x0 - 0.5 + (np.arange(npix) + 0.5) * step
    ry, rx = np.meshgrid(*raw, indexing="ij")
    inner = ndimage.binary_erosion(lab.pupil, iterations=2)
    for i in range(2):
        assert lab.clear[i][lab.pupil].mean() == pytest.approx(1.0, abs=1e-6)
        # away from the edge, I / I_clear is the pattern; linear resampling of a pattern
        # with a 37-px period over <= 2 px cells errs by < 1 %
        ratio = lab.intensity[i][inner] / lab.clear[i][inner]
        np.testing.assert_allclose(ratio, pattern(ry, rx, i)[inner], rtol=1e-2)
        # edge pixels (partly covered, >= 50 %) lower the mean clear level by a few %
        assert np.median(lab.clear[i][inner]) == pytest.approx(1.0, abs=0.05)


def test_single_frame_and_batch_cube_shapes(fits_files: dict[str, Path]) -> None:
    d = fits_files["dir"]
    frame = write_fits(d / "one.fits", LEVELS[0] * DISK * pattern(YY, XX, 0))
    clear = write_fits(d / "clear1.fits", LEVELS[0] * DISK)
    lab = load_lab_frames(frame, clear)
    assert lab.intensity.shape == (1, 64, 64)
    cube = np.stack([fits.getdata(fits_files["frames"])] * 3) - DARK  # (B, L, H, W)
    lab = load_lab_frames(write_fits(d / "cube.fits", cube), clear, npix=16)
    assert lab.intensity.shape == (3, 2, 16, 16)


def test_clear_errors(fits_files: dict[str, Path]) -> None:
    d = fits_files["dir"]
    small = write_fits(d / "small.fits", np.ones((H, W + 1)))
    with pytest.raises(LabFrameError, match="does not match the clear frame"):
        load_lab_frames(fits_files["frames"], small)
    with pytest.raises(LabFrameError, match="no pupil found"):
        load_lab_frames(fits_files["frames"], fits_files["dark"], fits_files["dark"])
    three = write_fits(d / "three.fits", np.stack([DISK] * 3))
    with pytest.raises(LabFrameError, match="3 planes; frames have 2 wavelengths"):
        load_lab_frames(fits_files["frames"], three)
    text = d / "notes.fits"
    text.write_text("this is not a FITS file\n")
    with pytest.raises(LabFrameError, match="not a readable FITS file") as err:
        load_lab_frames(text, fits_files["clear"])
    assert "\n" not in str(err.value)
    with pytest.raises(LabFrameError, match="no such file"):
        load_lab_frames(d / "absent.fits", fits_files["clear"])
