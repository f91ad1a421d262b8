"""Scale-out: shard files written by separate processes, presented as one dataset.

Each process writes one ordinary dataset file (`DatasetWriter(..., sample_offset=start)`)
covering a contiguous range of global sample indices. `combine_shards` then writes a
small master file whose per-sample variables are HDF5 virtual datasets mapping onto the
shards (relative paths: keep the master and its shards in one folder tree), with the
coordinates, static variables and attributes copied, so xarray and `ZWFSDataset` read it
exactly like a single-process file.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from data.lock import DatasetLock
from data.readers import attr_value, check_dataset_file, open_h5
from data.schema import (
    COORDINATES,
    OPTIONAL_VARIABLES,
    PER_SAMPLE,
    REQUIRED_ATTRS,
    STATIC,
    VARIABLES,
    DatasetError,
    DatasetExistsError,
    create_layout,
    fill_value,
    fingerprint,
    root_attrs,
)

__all__ = ["combine_shards", "shard_path", "shard_ranges"]

_COPIED_ROOT_ATTRS = (*REQUIRED_ATTRS, "versions")
_SKIPPED_VAR_ATTRS = ("DIMENSION_LIST", "REFERENCE_LIST", "CLASS", "NAME")


def shard_ranges(n_samples: int, n_shards: int) -> list[tuple[int, int]]:
    """Contiguous [start, stop) sample ranges of `n_shards` shards, sizes differing by <= 1."""
    if n_samples < 1 or not 1 <= n_shards <= n_samples:
        raise ValueError(f"need 1 <= n_shards ({n_shards}) <= n_samples ({n_samples})")
    edges = np.linspace(0, n_samples, n_shards + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in itertools.pairwise(edges)]


def shard_path(path: str | os.PathLike, index: int, n_shards: int) -> Path:
    """Shard `index` of `n_shards` next to the master: train.h5 -> train.shard-001-of-004.h5."""
    path = Path(path)
    return path.with_name(f"{path.stem}.shard-{index:03d}-of-{n_shards:03d}{path.suffix}")


def _read_shard(path: Path) -> dict[str, Any]:
    with open_h5(path) as f:
        check_dataset_file(f, required=tuple(VARIABLES))
        optional = tuple(k for k in OPTIONAL_VARIABLES if k in f)
        per_sample = (*PER_SAMPLE, *optional)
        return {
            "path": path,
            "attrs": {k: attr_value(v) for k, v in f.attrs.items()},
            "coords": {k: f[k][:] for k in COORDINATES if k != "sample"},
            "static": {k: f[k][:] for k in STATIC},
            "optional": optional,
            "segments": int(f["segment"].size) if "segment" in f else 0,
            "shapes": {k: f[k].shape for k in per_sample},
            "var_attrs": {
                k: {a: v for a, v in f[k].attrs.items() if a not in _SKIPPED_VAR_ATTRS}
                for k in per_sample
            },
        }


def _check_consistent(shards: list[dict[str, Any]]) -> None:
    first = shards[0]
    expected = int(first["attrs"]["sample_offset"])
    for s in shards:
        name = s["path"]
        if int(s["attrs"]["sample_offset"]) != expected:
            raise DatasetError(
                f"shards are not contiguous: {name} starts at sample "
                f"{s['attrs']['sample_offset']}, expected {expected}"
            )
        expected += int(s["attrs"]["n_samples"])
        for key in REQUIRED_ATTRS:
            if s["attrs"].get(key) != first["attrs"].get(key):
                raise DatasetError(f"shard {name} has a different {key} than {first['path']}")
        if s["optional"] != first["optional"]:
            raise DatasetError(f"shard {name} holds other variables than {first['path']}")
        for group in ("coords", "static"):
            for key, value in s[group].items():
                if not np.array_equal(value, first[group][key]):
                    raise DatasetError(f"shard {name} has a different {key} than {first['path']}")


def combine_shards(
    shard_paths: Sequence[str | os.PathLike],
    out_path: str | os.PathLike,
    *,
    overwrite: bool = False,
) -> Path:
    """Write the master file `out_path` over complete shard files; returns its path.

    The master's lock (`data.lock`) is held for the whole step: one combiner at a time."""
    if not shard_paths:
        raise ValueError("combine_shards needs at least one shard file")
    out_path = Path(out_path).absolute()
    with DatasetLock(out_path):
        return _combine_locked(shard_paths, out_path, overwrite)


def _combine_locked(
    shard_paths: Sequence[str | os.PathLike], out_path: Path, overwrite: bool
) -> Path:
    if out_path.exists() and not overwrite:
        raise DatasetExistsError(f"{out_path} already exists; use {{overwrite}} to replace it")
    shards = [_read_shard(Path(p).absolute()) for p in shard_paths]
    shards.sort(key=lambda s: int(s["attrs"]["sample_offset"]))
    _check_consistent(shards)
    first = shards[0]
    a0 = first["attrs"]
    offset = int(a0["sample_offset"])
    total = sum(int(s["attrs"]["n_samples"]) for s in shards)
    rel = [os.path.relpath(s["path"], out_path.parent) for s in shards]
    layout_kw = dict(
        wavelengths_m=first["coords"]["wavelength"],
        modes=first["coords"]["mode"],
        npix=int(first["coords"]["x"].size),
        pixel_scale_m=float(a0["pixel_scale_m"]),
    )
    caller_attrs = {k: a0[k] for k in _COPIED_ROOT_ATTRS if k in a0}
    optional = first["optional"]
    fp = fingerprint(
        caller_attrs, n_samples=total, sample_offset=offset, optional=optional, **layout_kw
    )
    attrs = root_attrs(
        {**caller_attrs, "shards": json.dumps(rel)},
        n_samples=total,
        sample_offset=offset,
        pixel_scale_m=layout_kw["pixel_scale_m"],
        fp=fp,
    )
    attrs["n_complete"] = np.int64(total)
    part = out_path.with_name(out_path.name + ".part")
    part.unlink(missing_ok=True)
    create_layout(
        part, n_samples=total, sample_offset=offset, attrs=attrs, per_sample=False,
        optional=optional, segments=first["segments"], **layout_kw,
    )  # fmt: skip
    with h5py.File(part, "r+") as f:
        for name in STATIC:
            f[name][...] = first["static"][name]
        specs = {**VARIABLES, **OPTIONAL_VARIABLES}
        for name in (*PER_SAMPLE, *optional):
            spec = specs[name]
            shape = (total, *first["shapes"][name][1:])
            layout = h5py.VirtualLayout(shape=shape, dtype=spec.dtype)
            start = 0
            for s, rel_path in zip(shards, rel, strict=True):
                src_shape = s["shapes"][name]
                layout[start : start + src_shape[0]] = h5py.VirtualSource(
                    rel_path, name, shape=src_shape, dtype=spec.dtype
                )
                start += src_shape[0]
            ds = f.create_virtual_dataset(name, layout, fillvalue=fill_value(np.dtype(spec.dtype)))
            for axis, dim in enumerate(spec.dims):
                ds.dims[axis].attach_scale(f[dim])
            for key, value in first["var_attrs"][name].items():
                ds.attrs[key] = value
    os.replace(part, out_path)
    return out_path
