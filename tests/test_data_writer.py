"""Dataset writer: layout (xarray, h5py), crash safety (dropped writer, real kill -9), guards."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import xarray as xr
from data_helpers import (
    MODES,
    N_SAMPLES,
    NPIX,
    PIXEL_SCALE_M,
    WAVELENGTHS_M,
    make_dataset,
    open_writer,
    sample_arrays,
    small_attrs,
    static_arrays,
    write_batches,
)

from data import (
    COORDINATES,
    VARIABLES,
    DatasetExistsError,
    DiskSpaceError,
    IncompleteDatasetError,
    OutputFolderError,
    ResumeError,
    check_free_space,
    estimate_size_bytes,
)
from data.writer import part_paths

TESTS_DIR = Path(__file__).resolve().parent


def assert_same_data(a: Path, b: Path) -> None:
    """Every variable (and coordinate) of two files is bit-identical."""
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        for name in (*VARIABLES, *COORDINATES):
            np.testing.assert_array_equal(fa[name][()], fb[name][()], err_msg=name)


def test_xarray_view_has_schema_dims_units_and_attrs(tmp_path: Path) -> None:
    path = make_dataset(tmp_path / "train.h5")
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        assert not ds["intensity"].variable._in_memory  # lazy
        for name, spec in {**VARIABLES, **COORDINATES}.items():
            assert ds[name].dims == spec.dims, name
            assert ds[name].dtype == np.dtype(spec.dtype), name
            assert ds[name].attrs["units"] == spec.units, name
        assert ds.sizes == {"sample": 10, "wavelength": 2, "y": NPIX, "x": NPIX, "mode": 6}
        np.testing.assert_array_equal(ds["wavelength"].values, WAVELENGTHS_M)
        np.testing.assert_array_equal(ds["mode"].values, MODES)
        np.testing.assert_array_equal(ds["sample"].values, np.arange(N_SAMPLES))
        x = ds["x"].values  # pixel centres, symmetric about 0, one pixel scale apart
        np.testing.assert_allclose(x, -x[::-1], atol=1e-15)
        np.testing.assert_allclose(np.diff(x), PIXEL_SCALE_M)
        inten, opd, coeffs, rms = sample_arrays(0, N_SAMPLES)
        np.testing.assert_array_equal(ds["intensity"].values, inten)
        np.testing.assert_array_equal(ds["opd"].values, opd)  # zeros outside stay zeros
        np.testing.assert_array_equal(ds["coefficients"].values, coeffs)
        np.testing.assert_array_equal(ds["rms"].values, rms)
        np.testing.assert_array_equal(ds["reference_zwfs"].values, static_arrays()[2])
        a = ds.attrs
        assert json.loads(a["config"]) == json.loads(json.dumps(small_attrs()["config"]))
        assert "h5py" in json.loads(a["versions"])
        assert (a["engine"], a["seed"], a["split"]) == ("test", 3, "train")
        assert a["n_samples"] == a["n_complete"] == N_SAMPLES
        created = dt.datetime.fromisoformat(a["created"])
        assert created.utcoffset() == dt.timedelta(0)


def test_layout_chunked_uncompressed_allocated_with_dimension_scales(tmp_path: Path) -> None:
    path = make_dataset(tmp_path / "train.h5")
    with h5py.File(path, "r") as f:
        for name, spec in VARIABLES.items():
            ds = f[name]
            assert ds.compression is None, name
            assert ds.id.get_create_plist().get_alloc_time() == h5py.h5d.ALLOC_TIME_EARLY
            for axis, dim in enumerate(spec.dims):
                assert ds.dims[axis][0].name == f"/{dim}", (name, dim)
            if spec.per_sample:
                assert ds.chunks[1:] == ds.shape[1:], name  # whole samples per chunk
                assert ds.id.get_num_chunks() == -(-ds.shape[0] // ds.chunks[0])


def _raw_data_ranges(path: Path) -> list[tuple[int, int]]:
    """Byte ranges of all raw data (chunks and contiguous blocks) of a file."""
    out = []
    with h5py.File(path, "r") as f:
        for name in f:
            ds = f[name]
            if ds.chunks:
                for i in range(ds.id.get_num_chunks()):
                    info = ds.id.get_chunk_info(i)
                    out.append((info.byte_offset, info.byte_offset + info.size))
            elif ds.id.get_offset() is not None:
                out.append((ds.id.get_offset(), ds.id.get_offset() + ds.id.get_storage_size()))
    return out


def test_writing_samples_never_changes_hdf5_metadata(tmp_path: Path) -> None:
    """The property kill -9 safety rests on: after creation only raw data bytes change."""
    path = tmp_path / "train.h5"
    open_writer(path, n_samples=40).close()
    part = part_paths(path)[0]
    before = np.frombuffer(part.read_bytes(), np.uint8)
    w = open_writer(path, n_samples=40, resume=True)
    w.write_static(*static_arrays())
    write_batches(w, batch=7)
    w.close()
    after = np.frombuffer(part.read_bytes(), np.uint8)
    assert after.size == before.size
    meta = np.ones(before.size, bool)
    for a, b in _raw_data_ranges(part):
        meta[a:b] = False
    assert meta.sum() > 1000  # the metadata really was compared
    assert np.array_equal(before[meta], after[meta])
    assert not np.array_equal(before[~meta], after[~meta])  # and the data did change


def test_dropped_writer_resumes_to_identical_file(tmp_path: Path) -> None:
    ref = make_dataset(tmp_path / "ref.h5", batch=2)
    path = tmp_path / "train.h5"
    w = open_writer(path)
    w.write_static(*static_arrays())
    write_batches(w, batch=2, stop=4)  # 2 of 5 batches, then the writer is dropped
    del w
    part, state = part_paths(path)
    assert part.exists() and not path.exists()
    assert json.loads(state.read_text())["n_complete"] == 4
    with open_writer(path, resume=True) as w:
        assert w.resumed and w.n_complete == 4 and w.next_sample == 4 and w.static_written
        write_batches(w, batch=2)
    assert path.exists() and not part.exists() and not state.exists()  # finalized on exit
    assert_same_data(ref, path)
    with h5py.File(path, "r") as f:
        assert int(f.attrs["n_complete"][0]) == N_SAMPLES


KILL_SCRIPT = """
import sys, time
sys.path.insert(0, {tests!r})
from pathlib import Path
import data_helpers as h
path = Path({path!r})
w = h.open_writer(path, n_samples={n}, resume=h.part_paths(path)[0].exists())
w.write_static(*h.static_arrays())
print("ready", w.next_sample, flush=True)
h.write_batches(w, batch=3)
w.finalize()
print("done", flush=True)
time.sleep(60)
"""


def test_sigkill_mid_run_then_resume_gives_identical_file(tmp_path: Path) -> None:
    """Real kill -9 at arbitrary moments of a writing loop, three times, then resume."""
    n = 1200  # ~2.5 ms per 3-sample batch here: the run outlasts the three kills
    ref = make_dataset(tmp_path / "ref.h5", n_samples=n, batch=3, durable=False)
    path = tmp_path / "train.h5"
    part, state = part_paths(path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    code = KILL_SCRIPT.format(tests=str(TESTS_DIR), path=str(path), n=n)
    kills = 0
    for delay in (0.05, 0.17, 0.31):
        proc = subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, env=env, text=True
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("ready")
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        if path.exists():  # the run finished before the kill: nothing left to test
            break
        kills += 1
        done = json.loads(state.read_text())["n_complete"]
        with h5py.File(part, "r") as f, h5py.File(ref, "r") as fr:  # still a valid file
            for name in ("intensity", "opd", "coefficients", "rms"):
                np.testing.assert_array_equal(f[name][:done], fr[name][:done], err_msg=name)
    assert kills >= 1
    assert 0 < done < n
    with open_writer(path, n_samples=n, resume=True) as w:
        assert w.n_complete == done
        write_batches(w, batch=3)
    assert_same_data(ref, path)


def test_resume_refuses_other_run_and_corrupt_or_missing_part(tmp_path: Path) -> None:
    path = tmp_path / "train.h5"
    with pytest.raises(ResumeError, match="nothing to resume"):
        open_writer(path, resume=True)
    w = open_writer(path)
    write_batches(w, batch=2, stop=2)
    w.close()
    with pytest.raises(ResumeError, match="different config/seed; use overwrite"):
        open_writer(path, resume=True, attrs=small_attrs(seed=4))
    with pytest.raises(ResumeError, match="different config/seed"):
        open_writer(path, n_samples=12, resume=True)
    with pytest.raises(DatasetExistsError, match="use resume"):
        open_writer(path)  # a partial run is never discarded silently
    part = part_paths(path)[0]
    part.write_bytes(b"garbage" * 100)
    with pytest.raises(ResumeError, match="corrupt") as err:
        open_writer(path, resume=True)
    assert "\n" not in str(err.value)
    with open_writer(path, overwrite=True) as w:  # --overwrite starts again
        assert w.n_complete == 0


def test_existing_file_kept_unless_overwrite_and_until_finalize(tmp_path: Path) -> None:
    path = make_dataset(tmp_path / "train.h5")
    old = path.read_bytes()
    with pytest.raises(DatasetExistsError, match="already exists; use overwrite") as err:
        open_writer(path)
    assert "\n" not in str(err.value)
    w = open_writer(path, overwrite=True, attrs=small_attrs(seed=9))
    w.write_static(*static_arrays())
    write_batches(w, batch=3, stop=6)
    w.close()  # interrupted overwrite
    assert path.read_bytes() == old
    with open_writer(path, overwrite=True, resume=True, attrs=small_attrs(seed=9)) as w:
        write_batches(w, batch=3)
    with h5py.File(path, "r") as f:
        assert int(f.attrs["seed"][0]) == 9


def test_write_order_shapes_and_finalize_guards(tmp_path: Path) -> None:
    path = tmp_path / "train.h5"
    w = open_writer(path)
    inten, opd, coeffs, rms = sample_arrays(0, 2)
    with pytest.raises(ValueError, match="expected start=0"):
        w.write_batch(2, inten, opd, coeffs, rms)
    with pytest.raises(ValueError, match="opd has shape"):
        w.write_batch(0, inten, opd[:, :4], coeffs, rms)
    with pytest.raises(ValueError, match="runs past"):
        w.write_batch(0, *sample_arrays(0, N_SAMPLES + 1))
    w.write_batch(0, inten, opd, coeffs, rms)
    with pytest.raises(IncompleteDatasetError, match="2 of 10"):
        w.finalize()
    write_batches(w, batch=4)
    with pytest.raises(IncompleteDatasetError, match="write_static"):
        w.finalize()
    w.close()
    with pytest.raises(RuntimeError), open_writer(path, resume=True) as w:
        w.write_static(*static_arrays())
        raise RuntimeError("driver crashed")
    assert not path.exists() and part_paths(path)[0].exists()  # left resumable
    with pytest.raises(ValueError, match="missing"):
        open_writer(tmp_path / "x.h5", attrs={"config": "{}"})


def test_size_estimate_and_free_space_check(tmp_path: Path) -> None:
    path = make_dataset(tmp_path / "train.h5", n_samples=200)
    est = estimate_size_bytes(200, len(WAVELENGTHS_M), NPIX, len(MODES))
    assert path.stat().st_size <= est <= path.stat().st_size + 400_000
    # 8000 x 4 x 128 x 128 float32 intensities are 2.1 GB; the OPD maps add 1/4
    assert estimate_size_bytes(8000, 4, 128, 35) == pytest.approx(2.097e9 * 1.25, rel=0.01)
    with pytest.raises(DiskSpaceError, match=r"needs 1000000000.00 GB, [\d.]+ GB free") as err:
        check_free_space(tmp_path / "big.h5", 10**18)
    assert "\n" not in str(err.value)
    check_free_space(tmp_path / "small.h5", 1000)


def test_unwritable_output_folder_is_one_line_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    with pytest.raises(OutputFolderError, match="not_a_folder") as err:
        open_writer(blocker / "sub" / "train.h5")
    assert "\n" not in str(err.value)


def test_resume_on_another_device_is_refused(tmp_path: Path) -> None:
    """A run simulated on a GPU is finished on a GPU: the CPU's rounding and noise
    generators differ, and one file must not mix the two (the device is fingerprinted)."""
    path = tmp_path / "train.h5"
    w = open_writer(path, attrs=small_attrs(device="cuda"))
    write_batches(w, batch=2, stop=2)
    w.close()
    with pytest.raises(ResumeError, match="simulated on cuda, this run is on cpu: resume with "
                       "device cuda") as err:  # fmt: skip
        open_writer(path, resume=True, attrs=small_attrs(device="cpu"))
    assert "\n" not in str(err.value)
    with open_writer(path, resume=True, attrs=small_attrs(device="cuda")) as w:
        assert w.resumed and w.n_complete == 2
