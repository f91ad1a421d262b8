"""Where an output came from: package versions and UTC times."""

from __future__ import annotations

import datetime as _dt
import sys
from importlib import metadata

__all__ = ["local_stamp", "package_versions", "utc_now_iso"]

_PACKAGES = ("zwfs", "numpy", "h5py", "h5netcdf", "xarray", "torch", "lightning", "poppy", "scipy")


def package_versions() -> dict[str, str]:
    """Versions of Python and of the installed packages that make and read outputs.

    Read from the installed metadata: nothing is imported.
    """
    out = {"python": sys.version.split()[0]}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def utc_now_iso() -> str:
    """Current UTC time, ISO 8601 to the second (what files record as their creation time)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def local_stamp() -> str:
    """Local time as ``YYYYmmdd-HHMMSS``, for folder names a person sorts by eye."""
    return f"{_dt.datetime.now():%Y%m%d-%H%M%S}"
