"""`sim generate`: the file format, crash-safe resume, shards and Dask, bad input."""

from __future__ import annotations

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
from typer.testing import CliRunner

from sim.cli import app
from sim.config import load_sim_config
from sim.generate import generate_dataset

runner = CliRunner()
PER_SAMPLE = ("intensity", "opd", "coefficients", "rms")


def tiny(**overrides: object):
    """16 px, two wavelengths, few modes: fast enough for many files per test."""
    base = {"pupil.npix": 16, "wavelengths_um": [1.0, 1.2], "aberration.noll_max": 11}
    return load_sim_config("quick").with_overrides(**{**base, **overrides})


def arrays(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {name: f[name][...] for name in (*PER_SAMPLE, "pupil", "reference_zwfs")}


def assert_same_samples(a: Path, b: Path) -> None:
    left, right = arrays(a), arrays(b)
    for name in left:
        assert np.array_equal(left[name], right[name]), name


def test_file_opens_in_xarray_with_units_and_provenance(tmp_path) -> None:
    path = generate_dataset(tiny(), tmp_path / "train.h5", 12, batch_size=5, device="cpu")
    ds = xr.open_dataset(path, engine="h5netcdf")
    assert ds["intensity"].dims == ("sample", "wavelength", "y", "x")
    assert ds["intensity"].shape == (12, 2, 16, 16)
    assert ds["opd"].attrs["units"] == "nm" and ds["rms"].attrs["units"] == "nm"
    assert np.allclose(ds["wavelength"].values, [1.0e-6, 1.2e-6])
    assert list(ds["mode"].values) == list(range(2, 12))
    for key in ("config", "versions", "engine", "seed", "created", "split", "n_complete"):
        assert key in ds.attrs
    assert int(ds.attrs["n_complete"]) == 12
    assert ds.attrs["device"] == "cpu" and ds.attrs["device_name"] == "cpu"  # fingerprinted
    # the stored map is the stored coefficients times the basis, and has the stored RMS
    inside = ds["pupil"].values >= 0.5
    opd = ds["opd"].values
    np.testing.assert_allclose(opd[:, inside].std(axis=1), ds["rms"].values, rtol=1e-5, atol=1e-3)
    assert ((ds["rms"].values >= 0) & (ds["rms"].values <= 500)).all()


def test_splits_never_share_samples(tmp_path) -> None:
    train = generate_dataset(tiny(), tmp_path / "train.h5", 4, split="train", device="cpu")
    val = generate_dataset(tiny(), tmp_path / "val.h5", 4, split="val", device="cpu")
    assert not np.allclose(arrays(train)["coefficients"], arrays(val)["coefficients"])


def test_workers_give_the_single_process_file(tmp_path) -> None:
    single = generate_dataset(tiny(), tmp_path / "one.h5", 23, batch_size=4, device="cpu")
    sharded = generate_dataset(
        tiny(), tmp_path / "two.h5", 23, batch_size=4, workers=2, device="cpu"
    )
    assert_same_samples(single, sharded)
    assert len(list(tmp_path.glob("two.shard-*.h5"))) == 2
    ds = xr.open_dataset(sharded, engine="h5netcdf")
    assert ds["intensity"].shape[0] == 23


def test_dask_cluster_gives_the_single_process_file(tmp_path) -> None:
    distributed = pytest.importorskip("distributed")
    single = generate_dataset(tiny(), tmp_path / "one.h5", 10, batch_size=3, device="cpu")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True) as cluster:
        dask_file = generate_dataset(
            tiny(), tmp_path / "dask.h5", 10, batch_size=3, workers=2,
            scheduler=cluster.scheduler_address, device="cpu",
        )  # fmt: skip
    assert_same_samples(single, dask_file)


def test_noise_is_deterministic_and_present(tmp_path) -> None:
    cfg = tiny(**{"detector.photons": 1e4, "detector.read_noise_e": 1.0})
    a = generate_dataset(cfg, tmp_path / "a.h5", 6, batch_size=4, device="cpu")
    b = generate_dataset(cfg, tmp_path / "b.h5", 6, batch_size=6, device="cpu")
    assert_same_samples(a, b)
    clean = generate_dataset(tiny(), tmp_path / "clean.h5", 6, device="cpu")
    assert not np.array_equal(arrays(a)["intensity"], arrays(clean)["intensity"])
    np.testing.assert_array_equal(arrays(a)["opd"], arrays(clean)["opd"])


KILL_SCRIPT = """
import sys
from pathlib import Path
from sim.config import load_sim_config
from sim.generate import generate_dataset
cfg = load_sim_config("quick").with_overrides(**{"pupil.npix": 32, "wavelengths_um": [1.0, 1.2]})
def slow(k):
    print("progress", flush=True)
generate_dataset(cfg, Path(sys.argv[1]), int(sys.argv[2]), batch_size=2, device="cpu",
                 resume=len(sys.argv) > 3, progress=slow)
"""


def test_kill_9_then_resume_gives_the_uninterrupted_file(tmp_path) -> None:
    """A run killed with SIGKILL mid-way and resumed equals an uninterrupted run."""
    script = tmp_path / "gen.py"
    script.write_text(KILL_SCRIPT)
    target, n = tmp_path / "killed.h5", 400
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(target), str(n)], stdout=subprocess.PIPE, env=env
    )
    seen = 0
    deadline = time.time() + 120
    while seen < 15 and time.time() < deadline:  # let a few batches land, then kill
        if proc.stdout.readline().startswith(b"progress"):
            seen += 1
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not target.exists(), "a killed run must not leave the final file"
    assert Path(str(target) + ".part").exists()
    subprocess.run(
        [sys.executable, str(script), str(target), str(n), "resume"], check=True, env=env
    )
    assert target.exists() and not Path(str(target) + ".part").exists()
    fresh = tmp_path / "fresh.h5"
    subprocess.run([sys.executable, str(script), str(fresh), str(n)], check=True, env=env)
    assert_same_samples(target, fresh)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--n", "0"], "positive"),
        (["--n", "5", "--split", "dev"], "unknown split"),
        (["--n", "5", "--wavelengths", "0.1"], "wavelengths_um"),
        (["--n", "5", "--wavelengths", "one"], "--wavelengths"),
        (["--n", "5", "--config", "nope.yaml"], "not found"),
        (["--n", "5", "--batch-size", "0"], "batch-size"),
    ],
)
def test_bad_input_is_one_line_and_touches_nothing(tmp_path, args, message) -> None:
    existing = tmp_path / "train.h5"
    existing.write_bytes(b"precious")
    result = runner.invoke(app, ["generate", *args, "--out", str(existing), "--overwrite"])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert existing.read_bytes() == b"precious"


def test_existing_file_needs_overwrite(tmp_path) -> None:
    existing = tmp_path / "train.h5"
    existing.write_bytes(b"precious")
    result = runner.invoke(
        app, ["generate", "--n", "3", "--config", "quick", "--out", str(existing)]
    )
    assert result.exit_code == 2 and "--overwrite" in result.output
    assert existing.read_bytes() == b"precious"


def test_cli_generate_and_show(tmp_path) -> None:
    out = tmp_path / "val.h5"
    result = runner.invoke(
        app,
        ["generate", "--n", "6", "--config", "quick", "--npix", "16", "--wavelengths", "1.0",
         "--split", "val", "--out", str(out), "--device", "cpu"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    ds = xr.open_dataset(out, engine="h5netcdf")
    assert ds["intensity"].shape == (6, 1, 16, 16) and ds.attrs["split"] == "val"


def test_generating_through_the_api_imports_neither_poppy_nor_astropy(tmp_path: Path) -> None:
    """The fast engine needs no POPPY at run time (its pupil and Zernike modes are its own)."""
    script = (
        "import sys\n"
        "from sim.config import load_sim_config\n"
        "from sim.generate import generate_dataset\n"
        "cfg = load_sim_config('quick').with_overrides(**{'pupil.npix': 16})\n"
        f"generate_dataset(cfg, {str(tmp_path / 'api.h5')!r}, 2, device='cpu')\n"
        "print(sorted(m for m in ('poppy', 'astropy') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_poppy_engine_writes_the_same_dataset(tmp_path: Path) -> None:
    """`--engine poppy` (POPPY's SAMC, complex128) and the fast engine (complex64) give the
    same frames to 1e-5 of the peak (`sim check` measures ~4e-7), the same OPD maps
    bit for bit (the draws do not depend on the engine), and say which engine made them."""
    import h5py

    cfg = load_sim_config("quick").with_overrides(
        **{"pupil.npix": 16, "wavelengths_um": [0.98, 1.2]}
    )
    fast = generate_dataset(cfg, tmp_path / "fast.h5", 3, device="cpu")
    slow = generate_dataset(cfg, tmp_path / "poppy.h5", 3, device="cpu", engine="poppy")
    with h5py.File(fast) as a, h5py.File(slow) as b:
        peak = float(np.abs(a["intensity"][:]).max())
        assert np.abs(a["intensity"][:] - b["intensity"][:]).max() <= 1e-5 * peak
        assert np.abs(a["reference_zwfs"][:] - b["reference_zwfs"][:]).max() <= 1e-5 * peak
        np.testing.assert_array_equal(a["opd"][:], b["opd"][:])
        assert "POPPY" in b.attrs["engine"].upper() and "ZWFSModel" in a.attrs["engine"]
