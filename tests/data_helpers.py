"""Small random datasets for the `data` tests, written through the real writer.

Every sample is a pure function of its global index (its own random generator), so an
interrupted-and-resumed run, a sharded run and a single run must give identical bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from data.writer import DatasetWriter, part_paths

__all__ = [
    "make_dataset",
    "open_writer",
    "part_paths",
    "sample_arrays",
    "small_attrs",
    "static_arrays",
    "write_batches",
]

N_SAMPLES = 10
WAVELENGTHS_M = (0.96e-6, 1.20e-6)
MODES = tuple(range(2, 8))
NPIX = 16
PIXEL_SCALE_M = 6.0 / NPIX  # 6 m pupil across the array


def small_attrs(seed: int = 3, **extra: Any) -> dict[str, Any]:
    """Root attributes a driver would give (resolved config as a JSON-able mapping)."""
    config = {"pupil": {"npix": NPIX, "diameter_m": 6.0}, "seed": seed}
    return {"config": config, "engine": "test", "seed": seed, "split": "train", **extra}


def disk_pupil(npix: int = NPIX) -> np.ndarray:
    """Hard-edged disk (H, W) filling the array."""
    c = (np.arange(npix) - (npix - 1) / 2) / (npix / 2)
    return (np.hypot(*np.meshgrid(c, c, indexing="ij")) <= 1.0).astype(np.float32)


def static_arrays(
    npix: int = NPIX, n_wl: int = len(WAVELENGTHS_M)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pupil (H, W), reference_clear (L, H, W), reference_zwfs (L, H, W))."""
    pupil = disk_pupil(npix)
    ref_clear = np.repeat(pupil[None], n_wl, axis=0)
    ref_zwfs = ref_clear * np.linspace(0.5, 1.5, n_wl, dtype=np.float32)[:, None, None]
    return pupil, ref_clear, ref_zwfs


def sample_arrays(
    start: int, stop: int, npix: int = NPIX, n_wl: int = len(WAVELENGTHS_M), n_modes: int = 6
) -> tuple[np.ndarray, ...]:
    """Samples [start, stop): intensity (B, L, H, W), opd (B, H, W) nm, coefficients, rms."""
    pupil = disk_pupil(npix)
    out: list[list[np.ndarray]] = [[], [], [], []]
    for i in range(start, stop):
        rng = np.random.default_rng(1000 + i)
        coeffs = rng.normal(0, 50, n_modes).astype(np.float32)
        opd = (rng.normal(0, 100, (npix, npix)) * pupil).astype(np.float32)
        inten = rng.random((n_wl, npix, npix), dtype=np.float32) * 2 * pupil
        rms = np.float32(np.sqrt(np.mean(opd[pupil > 0] ** 2)))
        for lst, arr in zip(out, (inten, opd, coeffs, rms), strict=True):
            lst.append(arr)
    return tuple(np.stack(lst).astype(np.float32) for lst in out)


def open_writer(path: Path, n_samples: int = N_SAMPLES, **kwargs: Any) -> DatasetWriter:
    """A writer with the small layout; kwargs go to `DatasetWriter` (attrs, resume, ...)."""
    kwargs.setdefault("attrs", small_attrs())
    return DatasetWriter(
        path,
        n_samples=n_samples,
        wavelengths_m=WAVELENGTHS_M,
        modes=MODES,
        npix=NPIX,
        pixel_scale_m=PIXEL_SCALE_M,
        **kwargs,
    )


def write_batches(writer: DatasetWriter, batch: int, stop: int | None = None) -> None:
    """Write from `writer.next_sample` up to `stop` (default: the writer's end) in batches."""
    end = writer.sample_offset + writer.n_samples if stop is None else stop
    while writer.next_sample < end:
        start = writer.next_sample
        writer.write_batch(start, *sample_arrays(start, min(start + batch, end)))


def make_dataset(
    path: Path, n_samples: int = N_SAMPLES, batch: int = 3, sample_offset: int = 0, **kwargs: Any
) -> Path:
    """Write and finalize a complete small dataset; returns its path."""
    with open_writer(path, n_samples=n_samples, sample_offset=sample_offset, **kwargs) as w:
        w.write_static(*static_arrays())
        write_batches(w, batch)
        return w.finalize()
