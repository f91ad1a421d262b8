"""The simulated bench: its DM and camera, and the example lab script closing the loop on it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from data.lab import lab_frames
from recon.train import load_train_config, train
from sim.config import load_sim_config
from sim.generate import generate_dataset
from sim.testbench import DeformableMirror, SimulatedBench
from sim.zernike import zernike_basis

ROOT = Path(__file__).resolve().parents[1]
OVER = {"pupil.npix": 32, "wavelengths_um": [1.0, 1.2], "aberration.noll_max": 15,
        "aberration.rms_max_nm": 80.0}  # fmt: skip


def test_dm_cancels_any_surface_it_can_make() -> None:
    bench = SimulatedBench(load_sim_config("quick").with_overrides(
        **{**OVER, "detector.photons": 1e7}))  # fmt: skip
    dm = bench.dm
    command = np.random.default_rng(0).normal(scale=20, size=dm.n_actuators)
    opd = 2 * dm.surface_nm(command)  # reflection doubles the surface
    fix = dm.correction(opd, bench.pupil)
    residual = opd + 2 * dm.surface_nm(fix)
    assert np.std(residual[bench.pupil]) < 1e-6 * np.std(opd[bench.pupil])
    with pytest.raises(ValueError, match="strokes"):
        dm.apply(np.zeros(3))
    nearest = DeformableMirror(64, actuators=12, coupling=0.3)
    assert nearest.influence.max() == pytest.approx(1.0, abs=0.05)  # an actuator on a pixel


def test_camera_frames_carry_the_stated_noise() -> None:
    # Frames in ADU, dark-subtracted and normalised by the clear frame (data.lab) are the
    # engine's intensities plus noise of variance (n I + r^2) / n^2 (n: e- per unit):
    # the normalised squared residual averages 1 (+-0.05 over ~1600 pixels x 2 x 8).
    cfg = load_sim_config("quick").with_overrides(
        **{**OVER, "detector.photons": 1e6, "detector.read_noise_e": 3.0})  # fmt: skip
    opd = 40 * zernike_basis([5], 32)[0]
    bench = SimulatedBench(cfg, opd, gain_e_per_adu=2.0)
    dark, clear = bench.camera.grab_dark(64), bench.camera.grab_clear(64)
    frames = np.stack([bench.camera.grab() for _ in range(8)])
    lab = lab_frames(frames, clear, dark, npix=32)
    with torch.no_grad():
        model = bench.engine(torch.as_tensor(opd[None])).numpy()[0]
    n = 1e6 / int(bench.engine.detector_mask.sum())
    z2 = (lab.intensity - model) ** 2 / ((n * model + 9.0) / n**2)
    assert z2[:, :, bench.pupil].mean() == pytest.approx(1.0, abs=0.05)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bench")
    data = generate_dataset(load_sim_config("quick").with_overrides(**OVER),
                            folder / "train.h5", 64, device="cpu")  # fmt: skip
    tcfg = load_train_config("quick").with_overrides(
        **{"arch": "phenn", "data.train": str(data), "data.val": None,
           "out_dir": str(folder / "runs"), "epochs": 2, "batch_size": 8}
    )  # fmt: skip
    return train(tcfg, enable_progress_bar=False, enable_model_summary=False)


def test_example_lab_script_closes_the_loop_on_the_bench(run) -> None:
    spec = importlib.util.spec_from_file_location("close_the_loop", ROOT / "examples" /
                                                  "close_the_loop.py")  # fmt: skip
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    from recon.reconstructor import Reconstructor

    rec = Reconstructor.from_checkpoint(run, refine="modal")
    bench = example.make_bench(rec, rms_nm=40.0)
    start = bench.residual_rms_nm()
    rows = example.close_the_loop(bench.camera, bench.dm, rec, iterations=6, gain=0.5,
                                  truth=bench.residual_rms_nm)  # fmt: skip
    # gain 0.5: the residual halves per step, down to the DM's fitting error
    assert rows[-1]["true_rms_nm"] < 0.15 * start
    assert rows[0]["measured_rms_nm"] == pytest.approx(start, rel=0.1)
    assert [r["iteration"] for r in rows] == list(range(6))
