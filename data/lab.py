"""Lab ZWFS frames from FITS, brought to the simulation's geometry and normalisation.

Steps: subtract the dark; find the pupil in the clear-pupil frame (threshold at
`pupil_threshold` x the median of its bright part, largest connected region, centroid);
crop a square as wide as the pupil diameter around the centroid (the simulation's array
width equals the pupil diameter); resample to `npix` (block average for an integer
factor, else linear `scipy.ndimage.zoom`); divide each wavelength by the mean clear
intensity inside the pupil (the simulation's normalisation). "Inside" is the
simulation's own definition: transmission >= 0.5, i.e. a clear intensity of at least
0.25 x the bright level, so lab and simulated frames are normalised over the same pixels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from data.schema import PUPIL_THRESHOLD, DatasetError

__all__ = ["LabFrameError", "LabFrames", "lab_frames", "load_lab_frames", "read_fits_image"]

_MIN_PUPIL_PIXELS = 12


class LabFrameError(DatasetError):
    """Lab frames cannot be read or do not fit together (one-line message)."""


@dataclass(frozen=True)
class LabFrames:
    """Frames cropped, centred and normalised like simulated intensities.

    intensity: (L, H, W) or (B, L, H, W) float32, clear-pupil normalised [1] (L = 1 for a
        single frame); clear: (L or 1, H, W) the normalised clear pupil (mean 1 in the
        pupil); pupil: (H, W) bool mask; crop_box: (y0, y1, x0, x1) half-open, raw pixels;
        centre: (y, x) pupil centroid [raw pixels]; diameter_px: area-equivalent pupil
        diameter [raw pixels]; clear_level: (L or 1,) dark-subtracted mean clear intensity
        in the pupil [raw counts]; pixel_area: camera pixels averaged into one output
        pixel ((crop width / npix)^2; the noise of a frame scales with it).
    """

    intensity: np.ndarray
    clear: np.ndarray
    pupil: np.ndarray
    crop_box: tuple[int, int, int, int]
    centre: tuple[float, float]
    diameter_px: float
    clear_level: np.ndarray
    pixel_area: float = 1.0


def read_fits_image(path: str | os.PathLike) -> np.ndarray:
    """First image HDU with >= 2 dimensions, as float64."""
    from astropy.io import fits

    path = Path(path)
    if not path.exists():
        raise LabFrameError(f"no such file {path}")
    try:
        with fits.open(path, memmap=False) as hdul:
            for hdu in hdul:
                if hdu.is_image and hdu.data is not None and hdu.data.ndim >= 2:
                    return np.asarray(hdu.data, dtype=np.float64)
    except (OSError, ValueError, TypeError) as err:
        msg = str(err).split(".")[0]
        raise LabFrameError(f"{path} is not a readable FITS file ({msg})") from None
    raise LabFrameError(f"{path} holds no image with 2 or more dimensions")


def _as_planes(arr: np.ndarray, what: str, path: str, max_ndim: int) -> np.ndarray:
    """(H, W) -> (1, H, W); (L, H, W) and (B, L, H, W) kept (up to `max_ndim`)."""
    if not 2 <= arr.ndim <= max_ndim:
        raise LabFrameError(f"{what} {path} has {arr.ndim} dimensions; expected 2..{max_ndim}")
    return arr[None] if arr.ndim == 2 else arr


def _find_pupil(img: np.ndarray, threshold: float, path: str) -> np.ndarray:
    """Boolean mask of the largest bright region of a clear-pupil image."""
    top = np.percentile(img, 99.5)
    bright = img > 0.5 * top
    if not top > 0 or bright.sum() < _MIN_PUPIL_PIXELS:
        raise LabFrameError(f"no pupil found in the clear frame {path}")
    level = float(np.median(img[bright]))
    labels, n = ndimage.label(img > threshold * level)
    sizes = ndimage.sum_labels(np.ones_like(img), labels, index=np.arange(1, n + 1))
    if n == 0 or sizes.max() < _MIN_PUPIL_PIXELS:
        raise LabFrameError(f"no pupil found in the clear frame {path}")
    mask = labels == 1 + int(np.argmax(sizes))
    if mask.mean() > 0.95:
        raise LabFrameError(f"no pupil found in the clear frame {path}: it is uniformly bright")
    if mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any():
        raise LabFrameError(f"the pupil in {path} touches the frame border (cut off?)")
    return mask


def _crop(arr: np.ndarray, y0: int, x0: int, n: int) -> np.ndarray:
    """Square crop [y0, y0+n) x [x0, x0+n) of the last two axes, zero-padded outside."""
    h, w = arr.shape[-2:]
    pad = max(0, -y0, -x0, y0 + n - h, x0 + n - w)
    if pad:
        widths = [(0, 0)] * (arr.ndim - 2) + [(pad, pad), (pad, pad)]
        arr, y0, x0 = np.pad(arr, widths), y0 + pad, x0 + pad
    return arr[..., y0 : y0 + n, x0 : x0 + n]


def _resample(arr: np.ndarray, npix: int) -> np.ndarray:
    """Last two axes (n, n) -> (npix, npix): block average if n % npix == 0, else zoom."""
    n = arr.shape[-1]
    if n == npix:
        return arr
    if n % npix == 0:
        f = n // npix
        return arr.reshape(*arr.shape[:-2], npix, f, npix, f).mean(axis=(-3, -1))
    factors = (1,) * (arr.ndim - 2) + (npix / n, npix / n)
    return ndimage.zoom(arr, factors, order=1, mode="nearest", grid_mode=True)


def load_lab_frames(
    frames_fits: str | os.PathLike,
    clear_fits: str | os.PathLike,
    dark_fits: str | os.PathLike | None = None,
    npix: int | None = None,
    pupil_threshold: float = 0.5,
) -> LabFrames:
    """Read ZWFS frames (H, W), (L, H, W) or (B, L, H, W) and a clear-pupil frame (H, W) or
    (L, H, W), subtract the dark (H, W) or (L, H, W), centre, crop, resample, normalise."""
    fpath, cpath = Path(frames_fits), Path(clear_fits)
    dark = None if dark_fits is None else read_fits_image(dark_fits)
    return lab_frames(
        read_fits_image(fpath), read_fits_image(cpath), dark, npix, pupil_threshold,
        names=(str(fpath), str(cpath), str(dark_fits)),
    )  # fmt: skip


def lab_frames(
    frames: np.ndarray,
    clear: np.ndarray,
    dark: np.ndarray | None = None,
    npix: int | None = None,
    pupil_threshold: float = 0.5,
    names: tuple[str, str, str] = ("frames", "clear frame", "dark"),
) -> LabFrames:
    """`load_lab_frames` on arrays a camera returns [counts]: frames (H, W), (L, H, W) or
    (B, L, H, W), clear (H, W) or (L, H, W), dark (H, W) or (L, H, W); `names` label them
    in errors."""
    if not 0 < pupil_threshold < 1:
        raise ValueError(f"pupil_threshold must lie in (0, 1), got {pupil_threshold}")
    if npix is not None and npix < 2:
        raise ValueError(f"npix must be >= 2, got {npix}")
    fpath, cpath, dpath = names
    frames = _as_planes(np.asarray(frames, dtype=np.float64), "frames", fpath, 4)
    clear = _as_planes(np.asarray(clear, dtype=np.float64), "clear frame", cpath, 3)
    n_wl = frames.shape[-3]
    if clear.shape[-2:] != frames.shape[-2:]:
        raise LabFrameError(
            f"frame size {frames.shape[-2:]} of {fpath} does not match the clear frame "
            f"{clear.shape[-2:]} of {cpath}"
        )
    if clear.shape[0] not in (1, n_wl):
        raise LabFrameError(
            f"the clear frame {cpath} has {clear.shape[0]} planes; frames have {n_wl} wavelengths"
        )
    if dark is not None:
        dark = _as_planes(np.asarray(dark, dtype=np.float64), "dark", dpath, 3)
        if dark.shape[-2:] != frames.shape[-2:] or dark.shape[0] not in (1, n_wl):
            raise LabFrameError(
                f"dark shape {dark.shape} of {dpath} does not fit frames {frames.shape} of {fpath}"
            )
        frames = frames - dark
        clear = clear - (dark if clear.shape[0] == dark.shape[0] else dark.mean(axis=0))

    mask_raw = _find_pupil(clear.mean(axis=0), pupil_threshold, cpath)
    yy, xx = np.nonzero(mask_raw)
    cy, cx = float(yy.mean()), float(xx.mean())
    diameter = 2.0 * np.sqrt(mask_raw.sum() / np.pi)
    n = max(2, round(diameter))
    y0, x0 = round(cy - (n - 1) / 2), round(cx - (n - 1) / 2)
    out = npix or n
    frames_c = _resample(_crop(frames, y0, x0, n), out)  # (..., L, n, n) -> (..., L, out, out)
    clear_c = _resample(_crop(clear, y0, x0, n), out)  # (L or 1, out, out)
    level = float(np.median(clear.mean(axis=0)[mask_raw]))
    pupil = clear_c.mean(axis=0) >= PUPIL_THRESHOLD**2 * level  # transmission >= 0.5
    if pupil.sum() < 1:
        raise LabFrameError(f"no pupil left after resampling {cpath} to {out} px")
    clear_level = clear_c[:, pupil].mean(axis=1)  # (L or 1,)
    norm = clear_level[:, None, None]
    intensity = frames_c / norm  # (..., L, out, out) / (L or 1, 1, 1)
    return LabFrames(
        intensity=intensity.astype(np.float32),
        clear=(clear_c / norm).astype(np.float32),
        pupil=pupil,
        crop_box=(y0, y0 + n, x0, x0 + n),
        centre=(cy, cx),
        diameter_px=float(diameter),
        clear_level=clear_level.astype(np.float64),
        pixel_area=(n / out) ** 2,
    )
