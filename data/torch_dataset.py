"""PyTorch `Dataset` over a dataset file: lazy h5py reads, one file handle per worker."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from data.clear import divide_by_clear
from data.readers import attr_value, check_dataset_file, open_h5
from data.schema import DatasetError
from data.wavelengths import wavelength_indices

__all__ = ["ZWFSDataset"]

_REQUIRED = ("intensity", "opd", "coefficients", "rms", "pupil")


class ZWFSDataset(Dataset):
    """Samples `(intensity (L, H, W), opd (1, H, W) [nm])` as float32 tensors.

    `wavelengths_um` picks (and orders) the wavelength channels by value; None keeps the
    file's. With `return_coefficients=True` items are `(intensity, opd, coefficients (M,)
    [nm RMS])`. With `divide_by_clear=True` the intensities come divided by their clear
    frames pixel by pixel (`data.clear.divide_by_clear`: the sample's own `clear`, or the
    file's `reference_clear`). The HDF5 file is opened lazily in each process
    (DataLoader workers included) and never pickled.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        wavelengths_um: Sequence[float] | None = None,
        return_coefficients: bool = False,
        divide_by_clear: bool = False,
    ) -> None:
        self.path = Path(path).absolute()
        self.return_coefficients = bool(return_coefficients)
        self.divide_by_clear = bool(divide_by_clear)
        with open_h5(self.path) as f:
            check_dataset_file(f, required=_REQUIRED)
            self.attrs: dict[str, Any] = {k: attr_value(v) for k, v in f.attrs.items()}
            self._n = int(f["intensity"].shape[0])
            self.npix = int(f["intensity"].shape[-1])
            file_wl_m = np.asarray(f["wavelength"][:], dtype=np.float64)
            self.modes = np.asarray(f["mode"][:], dtype=np.int64)
            self.pupil = torch.from_numpy(np.asarray(f["pupil"][:], dtype=np.float32))
            self._clear_per_sample = "clear" in f
            reference = (
                np.asarray(f["reference_clear"][:], dtype=np.float32)
                if "reference_clear" in f
                else None
            )
        self._wl_index = self._select(file_wl_m, wavelengths_um)
        self._reference_clear = None if reference is None else reference[self._wl_index]
        self.wavelengths_m = file_wl_m[self._wl_index]
        self._file: h5py.File | None = None
        self._pid: int | None = None

    @staticmethod
    def _select(file_wl_m: np.ndarray, wavelengths_um: Sequence[float] | None) -> np.ndarray:
        """Indices into the file's wavelength axis, in the requested order."""
        if wavelengths_um is None:
            return np.arange(file_wl_m.size)
        return wavelength_indices(file_wl_m, [float(w) * 1e-6 for w in wavelengths_um])

    def _handle(self) -> h5py.File:
        """This process's read handle (reopened after a fork into a worker)."""
        pid = os.getpid()
        if self._file is None or self._pid != pid:
            self._file = h5py.File(self.path, "r")
            self._pid = pid
        return self._file

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_file"] = None
        state["_pid"] = None
        return state

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        i = int(index)
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(f"sample {index} out of range [0, {self._n})")
        f = self._handle()
        intensity = f["intensity"][i][self._wl_index]  # (L_file, H, W) -> (L, H, W)
        if self.divide_by_clear:
            intensity = divide_by_clear(intensity, self._clear(f, slice(i, i + 1))[0])
        opd = f["opd"][i][None]  # (H, W) -> (1, H, W)
        out = (torch.from_numpy(intensity), torch.from_numpy(opd))
        if self.return_coefficients:
            out = (*out, torch.from_numpy(f["coefficients"][i]))
        return out

    def read_arrays(
        self, indices: np.ndarray | None = None, block: int = 256
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples `indices` (default all) as two tensors, read in blocks of `block` samples.

        Returns:
            intensity (N, L, H, W) float32 in this dataset's wavelength order, and
            opd (N, 1, H, W) float32 [nm]; what `__getitem__` gives, stacked.
        """
        idx = np.arange(self._n) if indices is None else np.asarray(indices, dtype=np.int64)
        f = self._handle()
        chunks_i, chunks_o = [], []
        for a in range(0, idx.size, block):
            part = idx[a : a + block]
            lo, hi = int(part.min()), int(part.max()) + 1  # one contiguous read per block
            inten = f["intensity"][lo:hi][part - lo][:, self._wl_index]  # (n, L, H, W)
            if self.divide_by_clear:
                clear = self._clear(f, slice(lo, hi))
                inten = divide_by_clear(inten, clear[part - lo] if len(clear) > 1 else clear)
            chunks_i.append(torch.from_numpy(np.ascontiguousarray(inten, dtype=np.float32)))
            chunks_o.append(torch.from_numpy(f["opd"][lo:hi][part - lo][:, None]))
        if not chunks_i:
            shape = (0, len(self._wl_index), self.npix, self.npix)
            return torch.empty(shape), torch.empty((0, 1, self.npix, self.npix))
        return torch.cat(chunks_i), torch.cat(chunks_o).float()

    def _clear(self, f: h5py.File, rows: slice) -> np.ndarray:
        """Clear frames (n, L, H, W) of `rows` in this dataset's channel order, or the
        file's one (1, L, H, W)."""
        if self._clear_per_sample:
            return np.asarray(f["clear"][rows], dtype=np.float32)[:, self._wl_index]
        if self._reference_clear is None:
            raise DatasetError(f"{self.path} has no clear-pupil frame to divide by")
        return self._reference_clear[None]

    @property
    def rms_nm(self) -> np.ndarray:
        """True OPD RMS over the pupil of every sample (n,) [nm]."""
        return np.asarray(self._handle()["rms"][:], dtype=np.float32)

    def close(self) -> None:
        """Close this process's file handle (reopened on the next access)."""
        if self._file is not None:
            self._file.close()
            self._file = None
            self._pid = None
