"""`sim show`: summary numbers and a quick-look PNG of a dataset file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from data.readers import open_dataset, virtual_source_files
from data.schema import pupil_mask

__all__ = ["pick_examples", "show_dataset"]


def pick_examples(rms_nm: np.ndarray, n_examples: int) -> list[int]:
    """Sample indices spread over the RMS range (evenly spaced ranks of the sorted RMS)."""
    if rms_nm.size == 0 or n_examples < 1:
        return []
    order = np.argsort(rms_nm, kind="stable")
    ranks = np.linspace(0, rms_nm.size - 1, min(n_examples, rms_nm.size)).round().astype(int)
    return [int(i) for i in order[np.unique(ranks)]]


def _file_size_bytes(path: Path) -> int:
    """Size of the file plus the shard files its virtual variables point to [bytes]."""
    import h5py

    with h5py.File(path, "r") as f:
        sources = virtual_source_files(f)
    return os.path.getsize(path) + sum(os.path.getsize(p) for p in sources)


def _image_axes(fig: Any, spec: Any) -> Any:
    ax = fig.add_subplot(spec)
    ax.set_xticks([])
    ax.set_yticks([])
    return ax


def show_dataset(
    path: str | os.PathLike, out_png: str | os.PathLike, n_examples: int = 4
) -> dict[str, Any]:
    """Write a PNG (rows: OPD [nm], intensity per wavelength; RMS histogram) and return a
    summary: n_samples, wavelengths_um, npix, n_modes, rms_{min,median,max}_nm, file size."""
    from matplotlib.figure import Figure

    path, out_png = Path(path), Path(out_png)
    with open_dataset(path) as ds:
        rms = np.asarray(ds["rms"].values, dtype=np.float64)
        wl_um = [float(w) * 1e6 for w in ds["wavelength"].values]
        pupil = pupil_mask(np.asarray(ds["pupil"].values))
        picks = pick_examples(rms, n_examples)
        opd = np.asarray(ds["opd"].values[picks]) if picks else np.empty((0,))
        inten = np.asarray(ds["intensity"].values[picks]) if picks else np.empty((0,))
        summary: dict[str, Any] = {
            "path": str(path),
            "n_samples": int(ds.sizes["sample"]),
            "wavelengths_um": wl_um,
            "npix": int(ds.sizes["x"]),
            "n_modes": int(ds.sizes["mode"]),
            "engine": str(ds.attrs.get("engine", "")),
            "split": str(ds.attrs.get("split", "")),
            "rms_min_nm": float(rms.min()),
            "rms_median_nm": float(np.median(rms)),
            "rms_max_nm": float(rms.max()),
            "file_size_bytes": _file_size_bytes(path),
            "examples": picks,
        }

    n_rows, n_cols = len(picks) + 1, 1 + len(wl_um)
    fig = Figure(figsize=(2.6 * n_cols, 2.3 * n_rows), layout="constrained")
    grid = fig.add_gridspec(n_rows, n_cols)
    for row, idx in enumerate(picks):
        ax = _image_axes(fig, grid[row, 0])
        lim = float(np.abs(opd[row][pupil]).max()) or 1.0
        im = ax.imshow(
            np.where(pupil, opd[row], np.nan), origin="lower", cmap="RdBu_r", vmin=-lim, vmax=lim
        )
        fig.colorbar(im, ax=ax, label="OPD [nm]")
        ax.set_title(f"#{idx}: {rms[idx]:.0f} nm RMS", fontsize=9)
        for col, w in enumerate(wl_um, start=1):
            ax = _image_axes(fig, grid[row, col])
            im = ax.imshow(inten[row, col - 1], origin="lower", cmap="magma")
            fig.colorbar(im, ax=ax)
            ax.set_title(f"I / I_clear at {w:.3g} um", fontsize=9)
    hist = fig.add_subplot(grid[-1, :])
    hist.hist(rms, bins=min(50, max(5, rms.size // 10)), color="0.4")
    hist.set_xlabel("OPD RMS over the pupil [nm]")
    hist.set_ylabel("samples")
    hist.set_title(f"{summary['n_samples']} samples, {path.name}", fontsize=9)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    return summary
