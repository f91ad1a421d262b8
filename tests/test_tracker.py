"""The frame-rate tracker: warm-started Gauss-Newton steps at the noise floor, reseeding."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from recon.cli import app
from recon.evaluation.warm_loop import drifting_coefficients, warm_loop
from recon.refine import FrameModel, FrameTracker, RefinedEstimator, ZeroEstimator
from recon.refine.crb import crb_rms_nm
from sim.aberrations import stream_id
from sim.config import load_sim_config
from sim.detector import add_noise
from sim.generate import generate_dataset
from sim.zernike import zernike_basis

runner = CliRunner()
OVER = {"pupil.npix": 32, "wavelengths_um": [1.0, 1.2], "aberration.noll_max": 15,
        "detector.photons": 1e7, "detector.read_noise_e": 1.0}  # fmt: skip


@pytest.fixture(scope="module")
def refined() -> RefinedEstimator:
    cfg = load_sim_config("quick").with_overrides(**OVER)
    return RefinedEstimator(ZeroEstimator(cfg), cfg)


def test_drift_moves_exactly_the_stated_rms_per_frame() -> None:
    c = drifting_coefficients(14, 20, 30.0, 10.0, seed=3)
    assert np.linalg.norm(c[0]) == pytest.approx(30.0)
    assert np.linalg.norm(np.diff(c, axis=0), axis=1) == pytest.approx(np.full(19, 10.0))


def test_warm_steps_track_a_drift_at_the_cramer_rao_bound(refined) -> None:
    # 10 nm per frame: the default steps (a Jacobian every 20 frames, BFGS between) land
    # within the CRB's sampling scatter; one step with a Jacobian per frame from 10 nm
    # away leaves up to 4x the bound.
    rep = warm_loop(refined, refined.cfg, frames=12, drift_nm=10, start_rms_nm=30, seed=1)
    s = rep["summary"]
    assert s["ratio_median"] < 1.5 and s["reseeds"] == 0
    assert len(rep["per_frame"]["latency_ms"]) == 12 and s["latency_median_ms"] > 0
    one = warm_loop(refined, refined.cfg, frames=12, drift_nm=10, start_rms_nm=30, seed=1,
                    steps=1, refresh=1)  # fmt: skip
    three_mean = np.mean(rep["per_frame"]["error_nm"][3:])
    assert np.mean(one["per_frame"]["error_nm"][3:]) > 1.5 * three_mean


def test_an_old_jacobian_slows_the_steps_but_keeps_the_deviance_minimum(refined) -> None:
    # The gradient is exact at every step (the engine's adjoint), so the steps' fixed point
    # is the deviance's minimum however old J^T W J is: after one Jacobian at a frame 30 nm
    # away, 16 steps on the next frame land where a full fit of that frame lands (to
    # 1e-4 to 4e-4 nm: the full fit's own step tolerance; the CRB is 0.13 nm). The old
    # Jacobian's J^T W r instead of the exact gradient stopped 9e-3 nm away.
    model = FrameModel(refined.cfg, dtype=torch.float64)
    basis = zernike_basis(refined.modes, 32)
    c = np.random.default_rng(4).normal(size=(2, len(refined.modes)))
    c = 30 * c / np.linalg.norm(c, axis=1, keepdims=True)
    c[1] = c[0] + c[1] / 3  # 10 nm of drift
    truth = np.einsum("fj,jhw->fhw", c, basis)
    clean = model.intensity(model.tensor(truth)).numpy()
    frames = add_noise(clean, np.arange(2), 0, stream_id("stale"), 1e7, 1.0, model.pupil_pixels)
    tracker = FrameTracker(refined, steps=16, refresh=1000)
    tracker(frames[0])
    warm = tracker(frames[1])
    assert not warm.reseeded and warm.good_fit
    full = refined.estimate(frames[1:])[0]  # a full fit of the second frame alone
    assert np.std((warm.opd_nm - full)[refined.mask]) < 2e-3  # nm


def test_the_cli_defaults_are_the_trackers() -> None:
    import inspect

    from recon.cli.loop import loop_command
    from recon.refine.tracker import DEFAULT_REFRESH, DEFAULT_STEPS

    params = inspect.signature(loop_command).parameters
    assert (params["steps"].default, params["refresh"].default) == (DEFAULT_STEPS, DEFAULT_REFRESH)


def test_a_jump_beyond_the_steps_reseeds_from_the_base(refined) -> None:
    model = FrameModel(refined.cfg, dtype=torch.float64)
    basis = zernike_basis(refined.modes, 32)
    c = np.random.default_rng(2).normal(size=(2, len(refined.modes)))
    c = 30 * c / np.linalg.norm(c, axis=1, keepdims=True)  # two unrelated 30 nm aberrations
    truth = np.einsum("fj,jhw->fhw", c, basis)
    clean = model.intensity(model.tensor(truth)).numpy()
    frames = add_noise(clean, np.arange(2), 0, stream_id("jump"), 1e7, 1.0, model.pupil_pixels)
    tracker = FrameTracker(refined, steps=1, refresh=1)
    first, second = tracker(frames[0]), tracker(frames[1])
    assert first.reseeded and first.good_fit  # the first frame starts from the base
    assert second.reseeded and second.good_fit  # 60 nm off: one step is not enough
    crb = crb_rms_nm(model, truth[1:], model.tensor(basis), model.noise())[0]
    assert np.std((second.opd_nm - truth[1])[refined.mask]) < 1.5 * crb
    with pytest.raises(ValueError, match="one frame per call"):
        tracker(frames)


def test_recon_loop_warm_reports_latency_and_error(tmp_path) -> None:
    cfg = load_sim_config("quick").with_overrides(**{**OVER, "detector.photons": None})
    data = generate_dataset(cfg, tmp_path / "sys.h5", 2, split="test", device="cpu")
    args = ["loop", "--baseline", "analytic", "--data", str(data), "--warm", "--frames", "6",
            "--drift", "5", "--start-rms", "20", "--out", str(tmp_path / "warm")]  # fmt: skip
    result = runner.invoke(app, [*args, "--photons", "1e7"])
    assert result.exit_code == 0, result.output
    rep = json.loads((tmp_path / "warm" / "warm_loop.json").read_text())
    assert rep["frames"] == 6 and rep["steps"] == 4 and rep["photons"] == 1e7
    assert (tmp_path / "warm" / "warm_loop.png").stat().st_size > 0
    assert "error/CRB" in " ".join(result.output.split())
    result = runner.invoke(app, args)  # a noiseless system has no noise floor
    assert result.exit_code != 0 and "--photons" in result.output
    result = runner.invoke(app, [*args, "--photons", "1e7", "--refine", "zonal"])
    assert result.exit_code != 0 and "--refine modal" in result.output
