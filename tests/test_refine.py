"""Model-based refinement: the engine's derivatives, the modal and zonal fits, the estimator."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from common.hardware import hardware_plan
from recon.estimators import AnalyticEstimator, Estimator
from recon.refine import (
    FrameModel,
    NoiseModel,
    RefinedEstimator,
    ZeroEstimator,
    refine_modal,
    refine_zonal,
)
from sim.config import load_sim_config
from sim.zernike import zernike_basis


def _cfg(npix: int):
    return load_sim_config("quick").with_overrides(**{"pupil.npix": npix})


def _draw(n_modes: int, rms_nm: list[float], seed: int) -> torch.Tensor:
    """Coefficients (B, J) [nm RMS] with the given RMS (unit-RMS modes) in random directions."""
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(len(rms_nm), n_modes, generator=g, dtype=torch.float64)
    return c / c.norm(dim=1, keepdim=True) * torch.tensor(rms_nm, dtype=torch.float64)[:, None]


class _Offset:
    """An `Estimator` that returns the truth plus a fixed error (the refinement's start)."""

    def __init__(self, cfg, opd_nm: np.ndarray) -> None:
        self.name, self.npix = "offset", cfg.pupil.npix
        self.wavelengths_m = list(cfg.wavelengths_m)
        self.mask = FrameModel(cfg).mask
        self.opd = opd_nm

    def estimate(self, intensities, wavelengths_m=None) -> np.ndarray:
        return self.opd.astype(np.float32)


@pytest.fixture(scope="module")
def model16() -> FrameModel:
    return FrameModel(_cfg(16))


def _fd(model: FrameModel, opd: torch.Tensor, v: torch.Tensor, h: float = 1e-3) -> torch.Tensor:
    """Central finite difference of the intensity along v (B, N, N): (B, L, N, N) per nm."""
    return (model.intensity(opd + h * v) - model.intensity(opd - h * v)) / (2 * h)


def test_modal_jacobian_matches_finite_differences(model16: FrameModel) -> None:
    # Central differences with h = 1e-3 nm (phase 6e-6 rad): truncation ~ h^2 I''' ~ 1e-12,
    # round-off ~ 1e-16 / h ~ 1e-13, against |J| ~ 1e-2: 1e-7 of max |J| bounds both
    # by three orders; leaving out the dot's cross term E . T(i e v) is an O(1) error.
    basis = model16.tensor(zernike_basis(list(range(2, 12)), 16))
    c = _draw(10, [80.0, 300.0], seed=1)
    opd = torch.einsum("bj,jhw->bhw", c, basis)
    jac = model16.modal_jacobian(model16.linearise(opd), basis)  # (B, J, L, N, N)
    fd = torch.stack([_fd(model16, opd, z.expand_as(opd)) for z in basis], dim=1)
    scale = float(fd.abs().max())
    assert scale > 1e-3
    assert float((jac - fd).abs().max()) < 1e-7 * scale
    # the same through torch's own gradcheck of the engine (autograd vs finite differences)
    f = lambda x: model16.intensity(torch.einsum("bj,jhw->bhw", x, basis))  # noqa: E731
    x = c[:1].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(f, (x,), eps=1e-3, atol=1e-7, fast_mode=True)


def test_weighted_jacobian_is_the_weights_times_the_jacobian(model16: FrameModel) -> None:
    # the weights are folded into the jvp's small factors: same numbers as weighting after
    basis = model16.tensor(zernike_basis(list(range(2, 8)), 16))
    opd = torch.einsum("bj,jhw->bhw", _draw(6, [50.0, 200.0], seed=3), basis)
    lin = model16.linearise(opd)
    w = torch.rand(lin.intensity.shape, generator=torch.Generator().manual_seed(4)).double()
    jac = model16.modal_jacobian(lin, basis)
    torch.testing.assert_close(model16.modal_jacobian(lin, basis, weights=w), jac * w[:, None])


def test_modal_adjoint_is_the_transposed_modal_jacobian(model16: FrameModel) -> None:
    # the fits' gradient without the Jacobian (tracker, a modal fit's end game): J^T u
    basis = model16.tensor(zernike_basis(list(range(2, 8)), 16))
    opd = torch.einsum("bj,jhw->bhw", _draw(6, [50.0, 200.0], seed=5), basis)
    lin = model16.linearise(opd)
    u = torch.randn(lin.intensity.shape, generator=torch.Generator().manual_seed(6)).double()
    jac = model16.modal_jacobian(lin, basis)  # (B, J, L, N, N)
    expected = torch.einsum("bjlxy,blxy->bj", jac, u)
    torch.testing.assert_close(model16.modal_vjp(lin, u, basis), expected)


def test_zonal_tangent_and_adjoint_match_finite_differences(model16: FrameModel) -> None:
    # zonal = pixel tangents: J v against finite differences (as above), and J^T u against
    # the adjoint identity <u, J v> = <J^T u, v> (exact up to float64 round-off, 1e-12).
    g = torch.Generator().manual_seed(2)
    lit = model16.tensor(model16.lit)
    opd = torch.randn(2, 16, 16, generator=g, dtype=torch.float64) * 60 * lit
    v = torch.randn(2, 16, 16, generator=g, dtype=torch.float64) * lit
    lin = model16.linearise(opd)
    jv = model16.jvp(lin, v[:, None])[:, 0]
    fd = _fd(model16, opd, v)
    assert float((jv - fd).abs().max()) < 1e-7 * float(fd.abs().max())
    u = torch.randn(lin.intensity.shape, generator=g, dtype=torch.float64)
    lhs = (u * jv).flatten(1).sum(1)
    rhs = (model16.vjp(lin, u) * v).flatten(1).sum(1)
    assert torch.allclose(lhs, rhs, rtol=1e-10, atol=0)


@pytest.mark.device
def test_modal_refinement_recovers_truth_from_50nm_start(device: str) -> None:
    # Noiseless quick config at 32 px, truth in the fitted modes (Noll 2-36) from 50 to
    # 450 nm RMS, start 50 nm RMS off in a random direction: the fit must land on the
    # truth (< 1 nm RMS, the target; float32 fields put the fixed point ~1e-4 nm
    # away) and say it converged.
    cfg = _cfg(32)
    model = FrameModel(cfg)
    modes = cfg.aberration.modes
    basis = model.tensor(zernike_basis(modes, 32))
    truth_c = _draw(len(modes), [50.0, 200.0, 450.0], seed=3)
    truth = torch.einsum("bj,jhw->bhw", truth_c, basis)
    frames = model.intensity(truth).float().numpy()
    start = truth + torch.einsum("bj,jhw->bhw", _draw(len(modes), [50.0] * 3, seed=4), basis)
    est = RefinedEstimator(_Offset(cfg, start.numpy()), cfg, mode="modal", device=device)
    assert est.model.dtype == torch.float32  # the plan's refinement precision
    out = est.estimate(frames)
    mask = model.mask
    err = out[:, mask] - truth.numpy()[:, mask]
    err_rms = (err - err.mean(1, keepdims=True)).std(1)
    start_err = (start - truth).numpy()[:, mask].std(1)
    assert np.all(start_err > 45)
    assert np.all(err_rms < 1.0), err_rms
    rep = est.last_report
    assert rep.converged.all() and (rep.iterations <= 15).all()
    assert est.name == "offset + refine"


def test_refined_estimator_contract_and_determinism() -> None:
    cfg = _cfg(16)
    model = FrameModel(cfg)
    basis = model.tensor(zernike_basis(cfg.aberration.modes, 16))
    truth = torch.einsum("bj,jhw->bhw", _draw(35, [40.0, 60.0], seed=5), basis)
    frames = model.intensity(truth).float().numpy()
    for base in (ZeroEstimator(cfg), AnalyticEstimator(cfg)):
        est = RefinedEstimator(base, cfg, mode="modal")
        assert isinstance(est, Estimator)
        a = est.estimate(frames)
        np.testing.assert_array_equal(est.estimate(frames), a)  # deterministic
        b = est.estimate(torch.from_numpy(frames[0]))  # (L, H, W) as torch
        assert a.dtype == np.float32 and a.shape == (2, 16, 16)
        assert np.abs(a[:, est.mask].mean(1)).max() < 1e-3  # piston removed
        # batch-independent up to float32 summation order (1e-5 relative of ~100 nm)
        np.testing.assert_allclose(a[:1], b, atol=5e-3)
        assert est.name == f"{base.name} + refine"
    # channels picked by value: reversed frames with their wavelengths give the same answer
    rev = est.estimate(frames[:, ::-1], wavelengths_m=cfg.wavelengths_m[::-1])
    np.testing.assert_allclose(rev, a, atol=5e-3)


def test_zonal_refinement_reduces_error() -> None:
    # 16 px, a 20 nm RMS pixel-noise start error on a smooth truth: Gauss-Newton-CG with
    # the light smoothness prior must remove most of it (< 0.2 x the start error; the
    # prior's bias on a 60 nm Zernike truth is far below that).
    cfg = _cfg(16)
    model = FrameModel(cfg)
    lit = model.tensor(model.lit)
    basis = model.tensor(zernike_basis(cfg.aberration.modes, 16))
    truth = torch.einsum("bj,jhw->bhw", _draw(35, [60.0], seed=6), basis)
    g = torch.Generator().manual_seed(7)
    start = truth + 20 * torch.randn(1, 16, 16, generator=g, dtype=torch.float64) * lit
    out, rep = refine_zonal(model, model.intensity(truth), start, max_iter=6, cg_iter=20)
    mask = torch.as_tensor(model.mask)
    before = float((start - truth)[:, mask].std())
    after = float((out - truth)[:, mask].std())
    assert before > 15 and after < 0.2 * before, (before, after)
    assert rep.iterations[0] >= 1


def test_noise_model_variance_and_weights() -> None:
    cfg = _cfg(16).with_overrides(**{"detector.photons": 1e6, "detector.read_noise_e": 2.0})
    model = FrameModel(cfg)
    noise = model.noise()
    n = 1e6 / model.pupil_pixels
    assert noise.counts_per_unit == pytest.approx(n)
    var = noise.variance(torch.tensor([0.5, 1.0], dtype=torch.float64))
    expected = (np.array([0.5, 1.0]) * n + 4.0) / n**2
    np.testing.assert_allclose(var.numpy(), expected, rtol=1e-12)
    assert not NoiseModel.from_config(_cfg(16), 100).noisy


def test_modal_refinement_of_zero_start_reports_iterations() -> None:
    cfg = _cfg(16)
    model = FrameModel(cfg)
    basis = model.tensor(zernike_basis(cfg.aberration.modes, 16))
    truth_c = _draw(35, [30.0], seed=8)
    frames = model.intensity(torch.einsum("bj,jhw->bhw", truth_c, basis))
    c, rep = refine_modal(model, frames, torch.zeros_like(truth_c), basis, max_iter=2)
    assert rep.iterations[0] == 2 and not rep.converged[0]  # stopped by max_iter
    assert rep.solver_status[0] == "iteration limit" and rep.status[0] == "poor fit"
    # but on its way: Gauss-Newton from 30 nm off, 2.9 nm after one step, 0.08 after two
    assert float((c - truth_c).norm()) < 0.3
    c, rep = refine_modal(model, frames, torch.zeros_like(truth_c), basis)
    assert rep.status[0] == "converged" and rep.iterations[0] <= 6
    assert float((c - truth_c).norm()) < 1e-4


def test_jacobian_chunks_and_the_kept_normal_equations_give_the_same_fit() -> None:
    # One sample at a time (a CPU's plan) or the whole batch (a GPU's): the same normal
    # equations, so the same steps to rounding; both keep J^T W J for the end game
    # (REUSE_NM) and still land on the truth.
    cfg = _cfg(16)
    model = FrameModel(cfg)
    basis = model.tensor(zernike_basis(cfg.aberration.modes, 16))
    truth_c = _draw(35, [30.0, 120.0, 300.0], seed=9)
    frames = model.intensity(torch.einsum("bj,jhw->bhw", truth_c, basis))
    start = truth_c + _draw(35, [20.0] * 3, seed=10)
    fits = [refine_modal(model, frames, start, basis, chunk=chunk) for chunk in (0, 1, 2)]
    for c, rep in fits:
        assert rep.converged.all() and float((c - truth_c).norm(dim=1).max()) < 1e-4
        assert (rep.iterations == fits[0][1].iterations).all()
    assert float((fits[1][0] - fits[0][0]).abs().max()) < 1e-8
    assert (hardware_plan("cpu").refine_chunk, hardware_plan("cuda").refine_chunk) == (1, 0)


def test_zonal_mode_also_polishes_the_start_itself_where_the_modes_fall_short() -> None:
    # Most of the OPD beyond Noll 36 (80-100 nm of Noll 37-120 on 60-100 nm of Noll
    # 2-36), a start 6-8 nm off: the modal fit drops what lies beyond its modes and the
    # zonal polish from it stays ~110 nm off; the zonal fit of the start itself lands
    # within 0.1 nm, and its lower misfit wins.
    cfg = _cfg(32)
    model = FrameModel(cfg)
    low, high = zernike_basis(list(range(2, 37)), 32), zernike_basis(list(range(37, 121)), 32)
    truth = np.einsum("bj,jhw->bhw", _draw(35, [60.0, 100.0], seed=11).numpy(), low)
    truth += np.einsum("bj,jhw->bhw", _draw(84, [80.0, 100.0], seed=12).numpy(), high)
    frames = model.intensity(model.tensor(truth)).float().numpy()
    start = truth + np.einsum("bj,jhw->bhw", _draw(84, [6.0, 8.0], seed=13).numpy(), high)
    est = RefinedEstimator(_Offset(cfg, start), cfg, mode="zonal", restarts=0)
    out = est.estimate(frames)
    rows = np.arange(2)
    from_modal, _ = est._refine_batches(
        frames, None, rows, est._refine_batches(frames, None, rows, start, "modal")[0], "zonal"
    )

    def residual(opd: np.ndarray) -> np.ndarray:
        d = (opd - truth)[:, model.mask]
        return (d - d.mean(1, keepdims=True)).std(1)

    assert (residual(from_modal) > 50).all()
    assert (residual(out) < 0.1).all()


def test_refined_estimator_zonal_mode_improves_the_analytic_start() -> None:
    # 16 px, 40 nm truth: the analytic start is off by its tip/tilt gain (~0.8, see the
    # analytic baseline) and its second-order model; three zonal Gauss-Newton steps must
    # at least halve its error and keep the contract.
    cfg = _cfg(16)
    model = FrameModel(cfg)
    basis = model.tensor(zernike_basis(cfg.aberration.modes, 16))
    truth = torch.einsum("bj,jhw->bhw", _draw(35, [40.0], seed=9), basis)
    frames = model.intensity(truth).float().numpy()
    base = AnalyticEstimator(cfg)
    est = RefinedEstimator(base, cfg, mode="zonal", max_iter=3)
    assert est.name == f"{base.name} + refine (zonal)"
    mask = model.mask
    before = base.estimate(frames, cfg.wavelengths_m)[:, mask] - truth.numpy()[:, mask]
    after = est.estimate(frames)[:, mask] - truth.numpy()[:, mask]
    assert after.std() < 0.5 * before.std(), (after.std(), before.std())


def test_refine_bench_agrees_with_torch_func_and_converges(tmp_path) -> None:
    # the benchmark's own checks: the closed-form Jacobian equals torch.func's forward
    # mode to float32 round-off, and the fits from 20 % + 5 nm off land on the truth
    from typer.testing import CliRunner

    from recon.cli import app

    out = tmp_path / "refine.json"
    result = CliRunner().invoke(
        app, ["bench-refine", "--sizes", "16", "--n", "4", "--batch-size", "2", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    (row,) = json.loads(out.read_text())["results"]
    assert row["npix"] == 16 and row["samples"] == 4
    assert row["jacobian_max_rel_diff"] < 1e-5
    assert row["converged_fraction"] == 1.0 and row["residual_max_nm"] < 1e-2
    assert row["jacobian_ms"] > 0 and row["refine_samples_per_s"] > 0
    # the per-iteration split: each part took time, and every iteration evaluates the
    # cost at least once (plus the start and any rejected step)
    parts = [row[f"{k}_ms_per_iteration"] for k in ("residual", "jacobian", "solve")]
    assert all(p > 0 for p in parts)
    assert sum(parts) < 1.5 * row["refine_ms"] / row["iterations_median"]
    assert 1.0 <= row["evaluations_per_iteration"] <= 9.0
    assert "evaluations per sample and iteration" in " ".join(result.output.split())
