"""Readers: xarray view, PyTorch Dataset (DataLoader workers), shards combined by VDS."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from data_helpers import (
    N_SAMPLES,
    NPIX,
    WAVELENGTHS_M,
    make_dataset,
    open_writer,
    sample_arrays,
    small_attrs,
    static_arrays,
    write_batches,
)
from torch.utils.data import DataLoader

import data
from data import (
    VARIABLES,
    DatasetError,
    DatasetExistsError,
    IncompleteDatasetError,
    ZWFSDataset,
    combine_shards,
    open_dataset,
    shard_path,
    shard_ranges,
)
from data.writer import part_paths


@pytest.fixture(scope="module")
def dataset_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("ds") / "train.h5")


def test_open_dataset_lazy_and_refuses_bad_files(dataset_path: Path, tmp_path: Path) -> None:
    with open_dataset(dataset_path) as ds:
        assert not ds["intensity"].variable._in_memory
        assert ds["opd"].attrs["units"] == "nm"
        np.testing.assert_array_equal(ds["rms"].values, sample_arrays(0, N_SAMPLES)[3])
    w = open_writer(tmp_path / "partial.h5")
    w.write_static(*static_arrays())
    write_batches(w, batch=3, stop=3)
    w.close()
    part = part_paths(tmp_path / "partial.h5")[0]
    with pytest.raises(IncompleteDatasetError, match="incomplete: 3 of 10"):
        open_dataset(part)
    with pytest.raises(IncompleteDatasetError):
        ZWFSDataset(part)
    with pytest.raises(DatasetError, match="no dataset file"):
        open_dataset(tmp_path / "missing.h5")
    (tmp_path / "junk.h5").write_text("not hdf5")
    with pytest.raises(DatasetError, match="cannot open") as err:
        open_dataset(tmp_path / "junk.h5")
    assert "\n" not in str(err.value)


def test_torch_dataset_items_and_metadata(dataset_path: Path) -> None:
    ds = ZWFSDataset(dataset_path)
    inten, opd, _, _ = sample_arrays(0, N_SAMPLES)
    assert len(ds) == N_SAMPLES and ds.npix == NPIX
    np.testing.assert_array_equal(ds.wavelengths_m, WAVELENGTHS_M)
    np.testing.assert_array_equal(ds.pupil.numpy(), static_arrays()[0])
    assert ds.attrs["seed"] == 3 and ds.attrs["n_complete"] == N_SAMPLES
    x, y = ds[7]
    assert x.dtype == y.dtype == torch.float32
    assert x.shape == (2, NPIX, NPIX) and y.shape == (1, NPIX, NPIX)
    np.testing.assert_array_equal(x.numpy(), inten[7])
    np.testing.assert_array_equal(y.numpy()[0], opd[7])
    np.testing.assert_array_equal(ds[-1][0].numpy(), inten[-1])
    with pytest.raises(IndexError):
        ds[N_SAMPLES]
    pickle.loads(pickle.dumps(ds))  # an open handle is never pickled


def test_torch_dataset_selects_wavelengths_by_value(dataset_path: Path) -> None:
    inten, _, coeffs, _ = sample_arrays(0, N_SAMPLES)
    ds = ZWFSDataset(dataset_path, wavelengths_um=[1.2, 0.9605], return_coefficients=True)
    x, _, c = ds[3]
    np.testing.assert_array_equal(x.numpy(), inten[3, ::-1])  # requested order
    np.testing.assert_array_equal(c.numpy(), coeffs[3])
    np.testing.assert_allclose(ds.wavelengths_m, [1.2e-6, 0.96e-6])
    with pytest.raises(ValueError, match=r"1.1 um is not available; have 0.96, 1.2"):
        ZWFSDataset(dataset_path, wavelengths_um=[1.1])
    with pytest.raises(ValueError):
        ZWFSDataset(dataset_path, wavelengths_um=[0.962])  # 2e-3 um away: no match


def test_torch_dataset_in_dataloader_with_two_workers(dataset_path: Path) -> None:
    ds = ZWFSDataset(dataset_path, wavelengths_um=[0.96])
    ds[0]  # a handle opened in the parent must not leak into the workers
    loader = DataLoader(ds, batch_size=3, num_workers=2, shuffle=False)
    xs, ys = zip(*loader, strict=True)
    inten, opd, _, _ = sample_arrays(0, N_SAMPLES)
    np.testing.assert_array_equal(torch.cat(xs).numpy(), inten[:, :1])
    np.testing.assert_array_equal(torch.cat(ys).numpy()[:, 0], opd)


def _shards(tmp_path: Path, n_shards: int = 2) -> list[Path]:
    master = tmp_path / "train.h5"
    return [
        make_dataset(shard_path(master, i, n_shards), n_samples=b - a, sample_offset=a, batch=2)
        for i, (a, b) in enumerate(shard_ranges(N_SAMPLES, n_shards))
    ]


def test_combined_shards_read_like_a_single_file(tmp_path: Path) -> None:
    single = make_dataset(tmp_path / "single" / "train.h5")
    shards = _shards(tmp_path)
    master = combine_shards(shards[::-1], tmp_path / "train.h5")  # any order
    with xr.open_dataset(single, engine="h5netcdf") as a, open_dataset(master) as b:
        for name in a.variables:
            assert a[name].dims == b[name].dims, name
            assert a[name].attrs == b[name].attrs, name
            np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
        for key in ("config", "seed", "engine", "split", "n_samples", "n_complete", "fingerprint"):
            assert a.attrs[key] == b.attrs[key], key
    da, db = ZWFSDataset(single), ZWFSDataset(master)
    assert len(da) == len(db) == N_SAMPLES
    for i in range(N_SAMPLES):
        for ta, tb in zip(da[i], db[i], strict=True):
            assert torch.equal(ta, tb)
    with pytest.raises(DatasetExistsError):
        combine_shards(shards, master)


def test_combine_refuses_gaps_other_runs_and_missing_shards(tmp_path: Path) -> None:
    assert shard_ranges(10, 3) == [(0, 3), (3, 7), (7, 10)]
    shards = _shards(tmp_path, n_shards=3)
    with pytest.raises(DatasetError, match="not contiguous"):
        combine_shards([shards[0], shards[2]], tmp_path / "gap.h5")
    other = make_dataset(
        tmp_path / "other.h5", n_samples=4, sample_offset=3, attrs=small_attrs(seed=7)
    )
    with pytest.raises(DatasetError, match=r"different (config|seed)"):
        combine_shards([shards[0], other, shards[2]], tmp_path / "mixed.h5")
    master = combine_shards(shards, tmp_path / "train.h5")
    shards[1].unlink()
    with pytest.raises(DatasetError, match="shard files missing"):
        open_dataset(master)


def test_package_exports() -> None:
    assert set(data.__all__) >= {"open_dataset", "ZWFSDataset", "DatasetWriter", "combine_shards"}
    for name in data.__all__:
        assert getattr(data, name) is not None
    assert set(VARIABLES) == {
        "intensity",
        "opd",
        "coefficients",
        "rms",
        "pupil",
        "reference_clear",
        "reference_zwfs",
    }
