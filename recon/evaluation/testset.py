"""A test set opened for evaluation: a context manager, so the file always closes."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from data.readers import attr_value, check_dataset_file, open_h5
from data.schema import DatasetError, pupil_mask
from sim.config import SimConfig

__all__ = ["TestSet", "open_test_set"]


@dataclass
class TestSet:
    """An open dataset file and what evaluation reads from it.

    Attributes:
        file: the open HDF5 file (closed on leaving the ``with`` block).
        wavelengths_m: the file's wavelengths [m], in channel order.
        mask: (H, W) bool pupil (`data.schema.pupil_mask`).
        n: samples in the file; npix: frame size [px].
        info: provenance (path, split, seed, fingerprint, config JSON).
    """

    __test__ = False  # not a pytest class

    file: h5py.File
    wavelengths_m: list[float]
    mask: np.ndarray
    n: int
    npix: int
    info: dict[str, Any]

    def sim_config(self) -> SimConfig:
        """The simulated system the file was made with (its ``config`` attribute)."""
        text = self.info.get("config")
        if not isinstance(text, str):
            raise DatasetError(f"{self.info['path']} has no 'config' attribute")
        return SimConfig.model_validate_json(text)

    @property
    def illuminated(self) -> bool:
        """True when the clear frames say more than the nominal pupil: each sample has
        its own (`clear`), or the file's one carries an illumination map."""
        if "clear" in self.file:
            return True
        text = self.info.get("config")
        return isinstance(text, str) and self.sim_config().pupil.amplitude_rms > 0

    def clear(self, a: int, b: int) -> np.ndarray:
        """Clear-pupil frames of samples [a, b): (b - a, L, H, W), or the file's one
        (1, L, H, W) when they do not vary; normalised as the intensities."""
        if "clear" in self.file:
            return np.asarray(self.file["clear"][a:b], dtype=np.float32)
        return np.asarray(self.file["reference_clear"][:], dtype=np.float32)[None]

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> TestSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_test_set(path: str | os.PathLike, required: tuple[str, ...] = ()) -> TestSet:
    """Open and check a dataset file for evaluation; use it in a ``with`` block."""
    f = open_h5(Path(path))
    try:
        check_dataset_file(f, required=("opd", "pupil", "wavelength", *required))
        attrs = {k: attr_value(v) for k, v in f.attrs.items()}
        return TestSet(
            file=f,
            wavelengths_m=[float(w) for w in f["wavelength"][:]],
            mask=pupil_mask(np.asarray(f["pupil"][:], dtype=np.float64)),
            n=int(f["opd"].shape[0]),
            npix=int(f["opd"].shape[-1]),
            info={
                "path": str(Path(path).absolute()),
                "split": attrs.get("split"),
                "seed": attrs.get("seed"),
                "fingerprint": attrs.get("fingerprint"),
                "config": attrs.get("config"),
            },
        )
    except BaseException:
        f.close()
        raise
