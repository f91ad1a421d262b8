"""Open a finished dataset file: checks shared by every reader, and the lazy xarray view."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

if TYPE_CHECKING:
    import xarray

from data.schema import (
    FORMAT_NAME,
    VARIABLES,
    DatasetError,
    IncompleteDatasetError,
    SchemaError,
)

__all__ = [
    "attr_value",
    "check_dataset_file",
    "dataset_bytes",
    "open_dataset",
    "open_h5",
    "virtual_source_files",
]


def attr_value(value: Any) -> Any:
    """Plain Python value of an HDF5 attribute (netCDF stores numbers as 1-element arrays)."""
    if isinstance(value, bytes | np.bytes_):
        return value.decode()
    arr = np.asarray(value)
    if arr.dtype.kind in "iufb" and arr.size == 1:
        return arr.reshape(()).item()
    return value


def dataset_bytes(path: str | os.PathLike) -> int:
    """Bytes on disk of a dataset: the file, plus its shards when it is a sharded master."""
    path = Path(path)
    with open_h5(path) as f:
        shards = virtual_source_files(f)
    return path.stat().st_size + sum(p.stat().st_size for p in shards if p.is_file())


def virtual_source_files(f: h5py.File) -> list[Path]:
    """Source files of the virtual (sharded) variables, resolved like HDF5 does it.

    Relative names are relative to the folder of the file that holds the virtual dataset.
    """
    folder = Path(f.filename).absolute().parent
    out: list[Path] = []
    for name in VARIABLES:
        if name in f and f[name].is_virtual:
            for src in f[name].virtual_sources():
                if src.file_name == ".":
                    continue
                p = Path(src.file_name)
                p = p if p.is_absolute() else folder / p
                if p not in out:
                    out.append(p)
    return out


def _recorded_progress(name: str) -> int:
    """Samples written by an unfinished run, from its `<file>.json` progress record."""
    try:
        return int(json.loads(Path(name + ".json").read_text())["n_complete"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def check_dataset_file(
    f: h5py.File, *, allow_incomplete: bool = False, required: tuple[str, ...] = ()
) -> None:
    """Raise a one-line `DatasetError` unless `f` is a complete file of this format.

    Checks the format tag, `n_complete == n_samples`, the listed variables, and that
    every shard file behind a virtual variable exists (HDF5 would silently return fill
    values for a missing one).
    """
    name = f.filename
    if attr_value(f.attrs.get("format")) != FORMAT_NAME:
        raise SchemaError(f"{name} is not a ZWFS dataset file (no format={FORMAT_NAME!r})")
    n_samples = attr_value(f.attrs.get("n_samples", -1))
    n_complete = attr_value(f.attrs.get("n_complete", -1))
    if not allow_incomplete and n_complete < n_samples:
        n_complete = max(n_complete, _recorded_progress(name))
        raise IncompleteDatasetError(
            f"{name} is incomplete: {n_complete} of {n_samples} samples "
            "(an interrupted run? finish it with {resume})"
        )
    missing = [v for v in required if v not in f]
    if missing:
        raise SchemaError(f"{name} lacks the variables {missing}")
    absent = [str(p) for p in virtual_source_files(f) if not p.exists()]
    if absent:
        raise DatasetError(f"{name}: shard files missing: {', '.join(absent)}")


def open_h5(path: Path) -> h5py.File:
    """Read-only h5py handle; a missing or non-HDF5 file is a one-line `DatasetError`."""
    if not path.exists():
        raise DatasetError(f"no dataset file at {path}")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DatasetError(f"cannot open {path} as HDF5 ({msg})") from None


def open_dataset(
    path: str | os.PathLike, *, allow_incomplete: bool = False, **kwargs: Any
) -> xarray.Dataset:
    """Lazy `xarray.Dataset` of a finished file (engine h5netcdf); kwargs go to xarray.

    Refuses (`IncompleteDatasetError`) a file with fewer complete samples than planned.
    """
    path = Path(path)
    with open_h5(path) as f:
        check_dataset_file(f, allow_incomplete=allow_incomplete, required=tuple(VARIABLES))
    import xarray  # imported on use: 0.3 s that `sim generate` does not need

    return xarray.open_dataset(path, engine="h5netcdf", **kwargs)
