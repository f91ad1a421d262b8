"""Cramer-Rao bound, and refinement through `recon eval`, `recon loop` and `Reconstructor`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from recon.cli import app
from recon.evaluation.crb import crb_rms_nm
from recon.refine import FrameModel, refine_modal
from sim.aberrations import stream_id
from sim.config import load_sim_config
from sim.detector import add_noise
from sim.zernike import zernike_basis

runner = CliRunner()


def _cfg(npix: int, **over: object):
    return load_sim_config("quick").with_overrides(**{"pupil.npix": npix, **over})


def test_crb_matches_monte_carlo_scatter_of_the_modal_fit() -> None:
    # 24 px, Noll 2-15, 1e5 photons + 2 e- read noise: 48 noise draws of one 80 nm truth,
    # each fitted from the truth (no basin question). An efficient estimator's mean squared
    # OPD error is the CRB^2; the fit's Gaussian weights equal the Fisher weights, and its
    # bias at this SNR is second order. The mean of 48 draws of a ~14-dof chi^2-like error
    # has a relative spread of ~sqrt(2/14/48) = 5 %: [0.7, 1.4] is > 6 sigma wide each
    # side, and a factor-2 slip in the Fisher matrix (n vs n^2, a missing 2 in dI) fails.
    cfg = _cfg(24, **{"detector.photons": 1e5, "detector.read_noise_e": 2.0})
    model = FrameModel(cfg)
    modes = list(range(2, 16))
    basis = model.tensor(zernike_basis(modes, 24))
    g = torch.Generator().manual_seed(11)
    c = torch.randn(1, len(modes), generator=g, dtype=torch.float64)
    c = c / c.norm() * 80.0
    truth = torch.einsum("bj,jhw->bhw", c, basis)
    clean = model.intensity(truth).numpy()
    n_draw = 48
    frames = add_noise(
        np.repeat(clean, n_draw, axis=0),
        np.arange(n_draw),
        seed=5,
        stream=stream_id("crb-test"),
        photons=1e5,
        read_noise_e=2.0,
        pupil_pixels=model.pupil_pixels,
    )
    fit, rep = refine_modal(
        model, model.tensor(frames), c.expand(n_draw, -1), basis, model.noise(), max_iter=10
    )
    assert rep.converged.all()
    mask = torch.as_tensor(model.mask)
    err = torch.einsum("bj,jhw->bhw", fit - c, basis)[:, mask]
    msq = float((err - err.mean(1, keepdim=True)).square().mean())
    bound = float(crb_rms_nm(model, truth.numpy(), basis, model.noise())[0])
    assert 0.5 < bound < 20  # a few nm at this flux: the test is not trivially satisfied
    assert 0.7 < msq / bound**2 < 1.4, (msq**0.5, bound)


def test_crb_scales_as_one_over_root_photons() -> None:
    # Poisson only: F = n sum J^2 / I, so 100x the photons is 10x smaller a bound (the
    # 1-count clamp of dark pixels changes it by < 1 %).
    bounds = []
    for photons in (1e6, 1e8):
        cfg = _cfg(16, **{"detector.photons": photons})
        model = FrameModel(cfg)
        basis = model.tensor(zernike_basis(list(range(2, 12)), 16))
        truth = 30.0 * basis[3:4]
        bounds.append(float(crb_rms_nm(model, truth.numpy(), basis, model.noise())[0]))
    assert bounds[0] / bounds[1] == pytest.approx(10.0, rel=1e-2)


@pytest.fixture(scope="module")
def noisy_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 samples, 24 px, two wavelengths, 0-100 nm RMS, 1e7 photons and 1 e- read noise."""
    from sim.generate import generate_dataset

    cfg = _cfg(
        24,
        **{
            "wavelengths_um": [0.98, 1.0],
            "aberration.rms_max_nm": 100.0,
            "detector.photons": 1e7,
            "detector.read_noise_e": 1.0,
        },
    )
    out = tmp_path_factory.mktemp("refine") / "test.h5"
    return generate_dataset(cfg, out, 12, split="test", seed=4, device="cpu")


def test_cli_eval_refine_rows_and_crb(noisy_set: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    args = ["eval", "--baseline", "analytic", "--refine", "modal", "--data", str(noisy_set)]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    names = list(report["estimators"])
    assert names == ["analytic@1um", "analytic@1um + refine", "zero start + refine"]
    res = report["per_sample"]["residual_rms_nm"]
    crb = np.asarray(report["per_sample"]["crb_rms_nm"])
    true = np.asarray(report["per_sample"]["true_rms_nm"])
    assert crb.shape == (12,) and np.all((crb > 0) & (crb < 5))
    # refined from the analytic start: at the noise floor where the start is in the
    # basin (< 50 nm); 3x the CRB leaves room for 12 samples' scatter about it
    small = true < 50
    assert small.sum() >= 3
    refined = np.asarray(res["analytic@1um + refine"])
    assert np.all(refined[small] < 3 * crb[small])
    assert np.median(refined[small]) < np.median(np.asarray(res["analytic@1um"])[small])
    md = (out / "report.md").read_text()
    assert "CRB (nm)" in md and "| analytic@1um + refine |" in md
    fit = report["estimators"]["analytic@1um + refine"]["summary"]
    # the small-RMS samples fit down to the noise; the analytic start is equivariant under
    # the grid's symmetries, so it is never restarted
    good = np.asarray(report["per_sample"]["good_fit"]["analytic@1um + refine"])
    assert good[small].all() and fit["restarted_fraction"] == 0
    assert fit["good_fit_fraction"] == pytest.approx(good.mean())
    assert "good_fit_fraction" not in report["estimators"]["analytic@1um"]["summary"]
    # every sample has one status; "converged" never counts a stall or a poor fit
    status = np.asarray(report["per_sample"]["fit_status"]["analytic@1um + refine"])
    counts = fit["fit_status_counts"]
    assert sum(counts.values()) == 12
    assert counts["poor fit"] + counts["model mismatch"] == int((~good).sum())
    assert fit["converged_fraction"] == pytest.approx((status == "converged").mean())
    assert set(status[good]) <= {"converged", "stalled", "iteration limit"}
    table = md.split("Refinement, samples per status")[1]
    assert f"| analytic@1um + refine | {counts['converged']} | {counts['stalled']} |" in table
    assert report["crb"]["bins"][0]["median_crb_nm"] is not None


def test_cli_loop_refine_and_unknown_mode(noisy_set: Path, tmp_path: Path) -> None:
    out = tmp_path / "loop"
    args = ["loop", "analytic", "--refine", "modal", "--iterations", "1", "--max-samples", "6"]
    result = runner.invoke(app, [*args, "--data", str(noisy_set), "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "loop.json").read_text())
    assert report["estimator"] == "analytic@1um + refine"
    bad = runner.invoke(
        app, ["eval", "--baseline", "analytic", "--refine", "pixel", "--data", str(noisy_set)]
    )
    assert bad.exit_code == 2 and "--refine must be modal or zonal" in bad.output


def test_closed_loop_with_refinement_is_below_1nm_after_one_iteration(tmp_path: Path) -> None:
    """The claim of docs/refinement.md: refined estimates corrected once leave every
    sample below 1 nm (noiseless; the analytic start, inside its basin of < 125 nm)."""
    from sim.generate import generate_dataset

    cfg = _cfg(24, **{"aberration.rms_max_nm": 100.0})
    data = generate_dataset(cfg, tmp_path / "loop.h5", 6, split="test", device="cpu")
    out = tmp_path / "loop"
    args = ["loop", "analytic", "--refine", "modal", "--iterations", "1", "--data", str(data)]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    residual = np.asarray(
        json.loads((out / "loop.json").read_text())["per_sample"]["residual_rms_nm"]
    )
    assert residual.shape == (6, 2) and residual[:, 0].max() > 20  # aberrations to correct
    assert residual[:, 1].max() < 1.0, residual[:, 1]


def test_reconstructor_refine_uses_the_checkpoint_system() -> None:
    # an untrained network starts ~anywhere; from a 20 nm truth the refinement still lands
    # within the modal fit's noiseless floor (< 1 nm), and the result carries the report
    from recon.estimators import NetworkEstimator
    from recon.reconstructor import Reconstructor

    cfg = _cfg(16, **{"wavelengths_um": [1.0]})
    net = torch.nn.Conv2d(1, 1, 1)
    torch.nn.init.zeros_(net.weight)
    torch.nn.init.zeros_(net.bias)
    meta = {"wavelengths_m": [1e-6], "npix": 16, "arch": "zero", "sim_config": cfg.model_dump()}
    rec = Reconstructor(NetworkEstimator(net, meta), refine="modal")
    model = FrameModel(cfg)
    basis = model.tensor(zernike_basis(cfg.aberration.modes, 16))
    truth = 20.0 * basis[4:5]
    pred = rec(model.intensity(truth).float().numpy())
    err = (pred.opd_nm - truth.numpy())[:, model.mask]
    assert (err - err.mean()).std() < 1.0
    assert pred.refine_report is not None and pred.refine_report.iterations[0] >= 1
    assert rec.refined.views == 8  # a network's first start: the median of its 8 views
    with pytest.raises(ValueError, match="sim_config"):
        Reconstructor(NetworkEstimator(net, {"wavelengths_m": [1e-6], "npix": 16}), refine="modal")
