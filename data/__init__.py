"""ZWFS dataset format: schema, HDF5 writer, readers (xarray, PyTorch, lab FITS frames).

`ZWFSDataset` (needs torch) and the lab-frame loader (needs astropy) are imported on
first use, so `import data` stays light for the writer and the xarray reader.
"""

from __future__ import annotations

from typing import Any

from data.readers import open_dataset
from data.schema import (
    COORDINATES,
    VARIABLES,
    DatasetError,
    DatasetExistsError,
    DiskSpaceError,
    IncompleteDatasetError,
    OutputFolderError,
    ResumeError,
    SchemaError,
)
from data.shards import combine_shards, shard_path, shard_ranges
from data.writer import DatasetWriter, check_free_space, estimate_size_bytes

__all__ = [
    "COORDINATES",
    "VARIABLES",
    "DatasetError",
    "DatasetExistsError",
    "DatasetWriter",
    "DiskSpaceError",
    "IncompleteDatasetError",
    "LabFrameError",
    "LabFrames",
    "OutputFolderError",
    "ResumeError",
    "SchemaError",
    "ZWFSDataset",
    "check_free_space",
    "combine_shards",
    "estimate_size_bytes",
    "load_lab_frames",
    "open_dataset",
    "shard_path",
    "shard_ranges",
]

_LAZY = {
    "ZWFSDataset": "data.torch_dataset",
    "LabFrames": "data.lab",
    "LabFrameError": "data.lab",
    "load_lab_frames": "data.lab",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
