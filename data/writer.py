"""Crash-safe, resumable HDF5 writer of one dataset split (netCDF4-compatible layout).

Crash safety, in short:

- the file is created whole under `<path>.part` (h5netcdf: dimension scales, coordinates,
  every variable, every chunk allocated with `ALLOC_TIME_EARLY`, uncompressed), closed,
  and reopened with h5py in r+ mode; from then on writing samples only overwrites raw
  chunk bytes in place and never touches HDF5 metadata (superblock v0, no consistency
  flags, no timestamps), so a process killed at any moment leaves an openable file;
- after each batch: `flush()` + `fsync`, then the sidecar `<path>.part.json` (n_complete
  and a fingerprint of the run) is replaced atomically; samples past `n_complete` may be
  half written and are simply written again on resume;
- `finalize()` writes `n_complete` into the root attributes, closes, fsyncs and renames
  `<path>.part` to `path` with `os.replace`: an existing final file stays intact until then.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from common.provenance import utc_now_iso
from data.lock import DatasetLock
from data.schema import (
    FORMAT_NAME,
    OPTIONAL_VARIABLES,
    PER_SAMPLE,
    SEGMENT_TERMS,
    STATIC,
    SYSTEM_FIELD_COUNT,
    VARIABLES,
    DatasetError,
    DatasetExistsError,
    DiskSpaceError,
    IncompleteDatasetError,
    OutputFolderError,
    ResumeError,
    VarSpec,
    create_layout,
    fingerprint,
    root_attrs,
)

__all__ = ["DatasetWriter", "check_free_space", "estimate_size_bytes", "part_paths"]

_OVERHEAD_BYTES = 256 * 1024
_OVERHEAD_PER_SAMPLE = 128  # chunk index entries and slack [bytes]


def part_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """(`<path>.part`, `<path>.part.json`): the file being written and its progress record."""
    path = Path(path)
    return path.with_name(path.name + ".part"), path.with_name(path.name + ".part.json")


def estimate_size_bytes(
    n_samples: int,
    n_wavelengths: int,
    npix: int,
    n_modes: int,
    optional: Sequence[str] = (),
    segments: int = 0,
) -> int:
    """Upper estimate of the file size [bytes] (float32 data, coordinates, metadata), with
    the `optional` variables (a per-sample clear frame doubles the intensity's share)."""
    hw = npix * npix
    extra = {
        "aberration_class": 1,
        "system": 4 * SYSTEM_FIELD_COUNT,
        "clear": 4 * n_wavelengths * hw,
        "segment_coefficients": 4 * 3 * segments,
    }
    per_sample = 4 * (n_wavelengths * hw + hw + n_modes + 1) + 8 + _OVERHEAD_PER_SAMPLE
    per_sample += sum(extra[k] for k in optional)
    static = 4 * hw * (1 + 2 * n_wavelengths) + 8 * (n_wavelengths + 2 * npix) + 4 * n_modes
    return int(n_samples * per_sample + static + _OVERHEAD_BYTES)


def _partial_attr(path: Path, key: str) -> Any:
    """Root attribute `key` of a partial file (None when absent or unreadable)."""
    try:
        with h5py.File(path, "r") as f:
            value = f.attrs.get(key)
    except OSError:
        return None
    return value.decode() if isinstance(value, bytes) else value


def _existing_folder(path: Path) -> Path:
    folder = path if path.is_dir() else path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def check_free_space(path: str | os.PathLike, needed_bytes: int) -> None:
    """Raise `DiskSpaceError` when the disk holding `path` has less than `needed_bytes` free."""
    folder = _existing_folder(Path(path).absolute())
    free = shutil.disk_usage(folder).free
    if needed_bytes > free:
        raise DiskSpaceError(
            f"not enough disk space in {folder}: the dataset needs {needed_bytes / 1e9:.2f} GB, "
            f"{free / 1e9:.2f} GB free"
        )


def _ensure_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputFolderError(
            f"cannot create the output folder {folder}: {err.strerror or err}"
        ) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputFolderError(f"the output folder {folder} is not writable")


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DatasetWriter:
    """Write one split sample batch by sample batch; resumable after a crash.

    Sample indices are global: a shard covering samples [sample_offset, sample_offset +
    n_samples) writes `write_batch(start=...)` with `start` in that range, in increasing
    contiguous order starting at `next_sample`.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        n_samples: int,
        wavelengths_m: Sequence[float],
        modes: Sequence[int],
        npix: int,
        pixel_scale_m: float,
        attrs: Mapping[str, Any],
        overwrite: bool = False,
        resume: bool = False,
        sample_offset: int = 0,
        durable: bool = True,
        optional: Sequence[str] = (),
        segments: int = 0,
    ) -> None:
        self.path = Path(path).absolute()
        self.segments = int(segments)
        self.part_path, self.state_path = part_paths(self.path)
        self.n_samples = int(n_samples)
        self.sample_offset = int(sample_offset)
        self.wavelengths_m = np.asarray(wavelengths_m, dtype=np.float64).reshape(-1)
        self.modes = np.asarray(modes, dtype=np.int32).reshape(-1)
        self.npix = int(npix)
        self.overwrite = bool(overwrite)
        self.durable = bool(durable)
        self._check_args(pixel_scale_m)
        unknown = sorted(set(optional) - set(OPTIONAL_VARIABLES))
        if unknown:
            raise ValueError(f"unknown optional variables {unknown}: {sorted(OPTIONAL_VARIABLES)}")
        self.optional = tuple(optional)
        self._attrs = dict(attrs)
        self.fingerprint = fingerprint(
            attrs,
            n_samples=self.n_samples,
            sample_offset=self.sample_offset,
            wavelengths_m=self.wavelengths_m,
            modes=self.modes,
            npix=self.npix,
            pixel_scale_m=pixel_scale_m,
            optional=self.optional,
        )
        attrs_out = root_attrs(
            attrs,
            n_samples=self.n_samples,
            sample_offset=self.sample_offset,
            pixel_scale_m=pixel_scale_m,
            fp=self.fingerprint,
        )
        self._f: h5py.File | None = None
        self._n_complete = 0
        self._static_written = False
        self.finalized = False

        _ensure_folder(self.path.parent)
        self._lock = DatasetLock(self.path).acquire()  # one writer per dataset, until close
        try:
            self._start(resume, attrs_out)
        except BaseException:
            self.close()
            raise

    def _start(self, resume: bool, attrs_out: dict[str, Any]) -> None:
        if self.path.exists() and not self.overwrite:
            raise DatasetExistsError(f"{self.path} already exists; use {{overwrite}} to replace it")
        if self.state_path.exists() and not self.part_path.exists():
            self.state_path.unlink()  # stale record of a run that was finalized
        self.resumed = bool(resume) and self.state_path.exists()
        if resume and not self.part_path.exists():
            raise ResumeError(f"nothing to resume: no partial file {self.part_path}")
        if not resume and self.part_path.exists() and not self.overwrite:
            raise DatasetExistsError(
                f"a partial run exists at {self.part_path}; use {{resume}} to continue it "
                "or {overwrite} to start again"
            )
        if self.resumed:
            self._reopen()
        else:  # fresh start (a partial file without a progress record never got a sample)
            self._create(attrs_out)

    # ----------------------------------------------------------------------------- setup
    def _check_args(self, pixel_scale_m: float) -> None:
        if self.n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {self.n_samples}")
        if self.sample_offset < 0:
            raise ValueError(f"sample_offset must be >= 0, got {self.sample_offset}")
        if self.wavelengths_m.size == 0 or not np.all(self.wavelengths_m > 0):
            raise ValueError(f"wavelengths_m must be positive and non-empty: {self.wavelengths_m}")
        if self.modes.size == 0:
            raise ValueError("modes must list at least one Noll index")
        if self.npix < 1:
            raise ValueError(f"npix must be >= 1, got {self.npix}")
        if not pixel_scale_m > 0:
            raise ValueError(f"pixel_scale_m must be > 0, got {pixel_scale_m}")

    def _needed_bytes(self) -> int:
        return estimate_size_bytes(
            self.n_samples, self.wavelengths_m.size, self.npix, self.modes.size, self.optional,
            self.segments,
        )  # fmt: skip

    def _create(self, attrs_out: dict[str, Any]) -> None:
        self.state_path.unlink(missing_ok=True)
        self.part_path.unlink(missing_ok=True)
        check_free_space(self.path.parent, self._needed_bytes())
        try:
            create_layout(
                self.part_path,
                n_samples=self.n_samples,
                sample_offset=self.sample_offset,
                wavelengths_m=self.wavelengths_m,
                modes=self.modes,
                npix=self.npix,
                pixel_scale_m=attrs_out["pixel_scale_m"],
                attrs=attrs_out,
                optional=self.optional,
                segments=self.segments,
            )
        except PermissionError as err:
            raise OutputFolderError(f"cannot write {self.part_path}: {err.strerror}") from None
        self._open()
        self._sync()

    def _open(self) -> None:
        try:
            self._f = h5py.File(self.part_path, "r+")
        except OSError as err:
            msg = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ResumeError(
                f"cannot open the partial file {self.part_path} ({msg}): it is corrupt or in "
                "use; use {overwrite} to start again"
            ) from None

    def _reopen(self) -> None:
        try:
            state = json.loads(self.state_path.read_text())
        except (OSError, ValueError) as err:
            raise ResumeError(f"unreadable progress record {self.state_path}: {err}") from None
        mismatch = ResumeError(
            f"the partial file {self.part_path} was made with a different config/seed; "
            "use {overwrite}"
        )
        if state.get("fingerprint") != self.fingerprint:
            raise self._device_mismatch() or mismatch
        self._open()
        assert self._f is not None
        if self._f.attrs.get("fingerprint") != self.fingerprint:
            self.close()
            raise mismatch
        self._check_layout()
        self._n_complete = int(state["n_complete"])
        self._static_written = bool(state["static_written"])
        used = os.stat(self.part_path).st_blocks * 512
        check_free_space(self.path.parent, max(self._needed_bytes() - used, 0))

    def _device_mismatch(self) -> ResumeError | None:
        """The error for a partial file simulated on another device type, if it is one."""
        theirs = _partial_attr(self.part_path, "device")
        ours = self._attrs.get("device")
        if theirs is None or ours is None or theirs == ours:
            return None
        return ResumeError(
            f"the partial file {self.part_path} was simulated on {theirs}, this run is on "
            f"{ours}: resume with {{device}} {theirs} (the devices' rounding and noise "
            "generators differ), or use {overwrite}"
        )

    def _check_layout(self) -> None:
        assert self._f is not None
        sizes = {
            "sample": self.n_samples,
            "wavelength": self.wavelengths_m.size,
            "mode": self.modes.size,
            "y": self.npix,
            "x": self.npix,
            "system_field": SYSTEM_FIELD_COUNT,
            "segment": self.segments,
            "segment_term": len(SEGMENT_TERMS),
        }
        for name, spec in self._variables().items():
            want = tuple(sizes[d] for d in spec.dims)
            if name not in self._f or self._f[name].shape != want:
                self.close()
                raise ResumeError(
                    f"the partial file {self.part_path} lacks {name} {want}; use {{overwrite}}"
                )

    # ----------------------------------------------------------------------- progress
    def _sync(self) -> None:
        """Flush the batch to the file (and disk), then record progress atomically."""
        assert self._f is not None
        self._f.flush()
        if self.durable:
            os.fsync(self._f.id.get_vfd_handle())
        state = {
            "format": FORMAT_NAME,
            "fingerprint": self.fingerprint,
            "n_samples": self.n_samples,
            "sample_offset": self.sample_offset,
            "n_complete": self._n_complete,
            "static_written": self._static_written,
            "updated": utc_now_iso(),
        }
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        with open(tmp, "w") as fh:
            json.dump(state, fh)
            fh.flush()
            if self.durable:
                os.fsync(fh.fileno())
        os.replace(tmp, self.state_path)
        if self.durable:
            _fsync_path(self.state_path.parent)

    @property
    def n_complete(self) -> int:
        """Samples written and flushed (counted from `sample_offset`)."""
        return self._n_complete

    @property
    def next_sample(self) -> int:
        """Global index of the next sample to write."""
        return self.sample_offset + self._n_complete

    @property
    def static_written(self) -> bool:
        """True once `write_static` has been flushed (also after a resume)."""
        return self._static_written

    def _handle(self) -> h5py.File:
        if self._f is None:
            raise DatasetError(f"the writer of {self.path} is closed")
        return self._f

    def _variables(self) -> dict[str, VarSpec]:
        """The variables this file holds: the schema's and its optional ones."""
        return {**VARIABLES, **{k: OPTIONAL_VARIABLES[k] for k in self.optional}}

    def _array(self, name: str, value: Any, shape: tuple[int, ...]) -> np.ndarray:
        arr = np.ascontiguousarray(value, dtype=self._variables()[name].dtype)
        if arr.shape != shape:
            raise ValueError(f"{name} has shape {arr.shape}, expected {shape}")
        return arr

    # -------------------------------------------------------------------------- writes
    def write_static(
        self, pupil: np.ndarray, reference_clear: np.ndarray, reference_zwfs: np.ndarray
    ) -> None:
        """Write pupil (H, W) and the clear / unaberrated ZWFS references (L, H, W)."""
        f = self._handle()
        hw = (self.npix, self.npix)
        lhw = (self.wavelengths_m.size, *hw)
        values = dict(pupil=pupil, reference_clear=reference_clear, reference_zwfs=reference_zwfs)
        for name in STATIC:
            f[name][...] = self._array(name, values[name], hw if name == "pupil" else lhw)
        self._static_written = True
        self._sync()

    def write_batch(
        self,
        start: int,
        intensity: np.ndarray,
        opd: np.ndarray,
        coefficients: np.ndarray,
        rms: np.ndarray,
        **optional: np.ndarray,
    ) -> None:
        """Write samples [start, start + B): intensity (B, L, H, W) [1], opd (B, H, W) [nm],
        coefficients (B, M) [nm RMS], rms (B,) [nm], and this file's optional variables
        (`OPTIONAL_VARIABLES`: aberration_class (B,), system (B, 5), clear (B, L, H, W))."""
        if set(optional) != set(self.optional):
            raise ValueError(
                f"write_batch got optional variables {sorted(optional)}, the file holds "
                f"{sorted(self.optional)}"
            )
        f = self._handle()
        if start != self.next_sample:
            raise ValueError(f"write_batch expected start={self.next_sample}, got {start}")
        b = int(np.shape(rms)[0]) if np.ndim(rms) == 1 else -1
        if b < 1:
            raise ValueError(f"rms must have shape (B,) with B >= 1, got {np.shape(rms)}")
        end = self.sample_offset + self.n_samples
        if start + b > end:
            raise ValueError(f"batch [{start}, {start + b}) runs past the last sample {end - 1}")
        hw = (self.npix, self.npix)
        shapes = {
            "intensity": (b, self.wavelengths_m.size, *hw),
            "opd": (b, *hw),
            "coefficients": (b, self.modes.size),
            "rms": (b,),
            "aberration_class": (b,),
            "system": (b, SYSTEM_FIELD_COUNT),
            "segment_coefficients": (b, self.segments, len(SEGMENT_TERMS)),
            "clear": (b, self.wavelengths_m.size, *hw),
        }
        values = dict(intensity=intensity, opd=opd, coefficients=coefficients, rms=rms, **optional)
        arrays = {n: self._array(n, values[n], shapes[n]) for n in (*PER_SAMPLE, *self.optional)}
        i0 = start - self.sample_offset
        for name, arr in arrays.items():
            f[name][i0 : i0 + b] = arr
        self._n_complete += b
        self._sync()

    # ------------------------------------------------------------------------- closing
    def close(self) -> None:
        """Flush and close without finalizing: `<path>.part` stays, resumable; the lock goes."""
        try:
            self._close_file()
        finally:
            self._lock.release()

    def _close_file(self) -> None:
        if self._f is not None:
            try:
                self._f.flush()
            finally:
                self._f.close()
                self._f = None

    def finalize(self) -> Path:
        """Record `n_complete`, close, and rename `<path>.part` to `path`; returns `path`."""
        f = self._handle()
        if self._n_complete < self.n_samples:
            raise IncompleteDatasetError(
                f"{self.part_path}: {self._n_complete} of {self.n_samples} samples written; "
                "cannot finalize"
            )
        if not self._static_written:
            raise IncompleteDatasetError(
                f"{self.part_path}: pupil and references not written (call write_static)"
            )
        if self.path.exists() and not self.overwrite:
            raise DatasetExistsError(f"{self.path} already exists; use {{overwrite}} to replace it")
        f.attrs.modify("n_complete", np.int64(self._n_complete))
        try:
            self._close_file()
            _fsync_path(self.part_path)
            os.replace(self.part_path, self.path)
            _fsync_path(self.path.parent)
            self.state_path.unlink(missing_ok=True)
            self.finalized = True
        finally:
            self._lock.release()  # held until the final file is in place
        return self.path

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        """On a clean exit a complete file is finalized; otherwise `.part` stays resumable."""
        if self.finalized:
            return
        if exc_type is None and self._n_complete == self.n_samples and self._static_written:
            self.finalize()
        else:
            self.close()
