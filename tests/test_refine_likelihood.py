"""The refinement's likelihood (shifted-Poisson deviance), its goodness of fit, and the
restarts from the grid's symmetries that it triggers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recon.refine import FrameModel, NoiseModel, RefinedEstimator, good_fit
from recon.refine.noise import NOISELESS_MISFIT
from recon.refine.symmetry import transform as _transform
from recon.refine.symmetry import untransform as _untransform
from sim.config import load_sim_config
from sim.detector import add_noise
from sim.zernike import zernike_basis


def _cfg(npix: int, photons: float | None = None):
    over = {"pupil.npix": npix}
    if photons is not None:
        over |= {"detector.photons": photons, "detector.read_noise_e": 1.0}
    return load_sim_config("quick").with_overrides(**over)


def _opd(cfg, rms_nm: list[float], seed: int) -> torch.Tensor:
    """OPD maps (B, N, N) [nm] of Noll 2..J with the given RMS, random directions."""
    g = torch.Generator().manual_seed(seed)
    modes = cfg.aberration.modes
    c = torch.randn(len(rms_nm), len(modes), generator=g, dtype=torch.float64)
    c = c / c.norm(dim=1, keepdim=True) * torch.tensor(rms_nm, dtype=torch.float64)[:, None]
    basis = torch.as_tensor(zernike_basis(modes, cfg.pupil.npix))
    return torch.einsum("bj,jhw->bhw", c, basis)


@pytest.mark.parametrize("counts", [0.0, 2.0, 30.0, 500.0])
def test_deviance_null_matches_the_simulated_detector(counts: float) -> None:
    # 90,000 pixels of sim.detector's own noise (Poisson + 1 e- read noise) at a fixed
    # true count: their mean deviance has a Monte-Carlo error sqrt(2 / 9e4) ~ 0.005, so
    # 0.025 is 5 sigma; a chi^2 null (mean 1) misses the dark pixels' 0.80 by 0.2.
    n = 100.0  # counts per normalised unit
    truth = np.full((1, 1, 300, 300), counts / n)
    frames = add_noise(
        truth, np.array([0]), seed=3, stream=0, photons=n, read_noise_e=1.0, pupil_pixels=1
    )
    noise = NoiseModel(n, 1.0)
    t, y = torch.as_tensor(truth), torch.as_tensor(frames)
    dev = noise.deviance(t, y)
    mean, var = noise.deviance_null(t)
    assert float(dev.mean()) == pytest.approx(float(mean.mean()), abs=0.025)
    assert float(dev.var()) == pytest.approx(float(var.mean()), rel=0.1)


def _null_by_dense_integral(counts: float, read: float) -> tuple[float, float]:
    """Mean and variance of the deviance at true counts `counts`: exact Poisson sum, read
    noise integrated on a 0.001-sigma grid (the clamp's kink costs ~1e-6)."""
    from scipy.special import xlogy
    from scipy.stats import poisson

    shift = max(read**2, 1.0)
    mu = counts + shift
    k = np.arange(0, int(counts + 12 * np.sqrt(counts) + 30))
    pk = poisson.pmf(k, counts) if counts > 0 else (k == 0).astype(float)
    g = np.linspace(-12, 12, 24001)
    wg = np.exp(-0.5 * g**2)
    wg /= wg.sum()
    d = np.clip(k[:, None] + shift + read * g, 0, None)
    dev = 2 * (xlogy(d, d / mu) - (d - mu))
    m1, m2 = (dev * wg).sum(1) @ pk, (dev**2 * wg).sum(1) @ pk
    return m1, m2 - m1**2


@pytest.mark.parametrize("read", [1.0, 3.0])
def test_deviance_null_matches_a_dense_integral(read: float) -> None:
    # Through `deviance_null` (the table and its interpolation), off the table's grid,
    # from no light to 40 counts, where the deviance is furthest from chi^2 (at 0
    # counts and 1 e-: mean 0.815, variance 0.741, against 1 and 2).
    n = 50.0
    noise = NoiseModel(n, read)
    for counts in (0.0, 0.37, 1.3, 4.1, 40.0):
        mean, var = noise.deviance_null(torch.tensor([counts / n], dtype=torch.float64))
        ref_mean, ref_var = _null_by_dense_integral(counts, read)
        assert float(mean) == pytest.approx(ref_mean, abs=2e-3), counts
        assert float(var) == pytest.approx(ref_var, rel=1e-2), counts


def test_fisher_scoring_step_is_the_deviance_gradient() -> None:
    # Gauss-Newton on w (I - y) with w = n / sqrt(n I + r^2) is Fisher scoring of the
    # deviance: w^2 (I - y) is exactly d(deviance / 2) / dI, also for dark pixels whose
    # read noise took the measured counts below zero (y clamped as in the deviance).
    g = torch.Generator().manual_seed(0)
    n = 300.0
    noise = NoiseModel(n, 1.0)
    inten = torch.cat((0.5 + 1.5 * torch.rand(64, generator=g, dtype=torch.float64),
                       torch.full((8,), 1e-4, dtype=torch.float64)))  # fmt: skip
    frames = inten + 0.05 * torch.randn(72, generator=g, dtype=torch.float64)
    frames[64:] = -torch.linspace(0.5, 4.0, 8, dtype=torch.float64) / n  # -0.5..-4 counts
    x = inten.clone().requires_grad_()
    (grad,) = torch.autograd.grad(0.5 * noise.deviance(x, frames).sum(), x)
    w = noise.weights(inten)
    fisher = w.square() * (inten - noise.clamped_frames(frames))
    torch.testing.assert_close(grad, fisher, rtol=1e-10, atol=0)
    assert (noise.clamped_frames(frames)[64:] > frames[64:]).any()  # the clamp was used


def test_good_fit_passes_the_truth_and_flags_a_wrong_opd() -> None:
    cfg = _cfg(32, photons=1e6)
    model = FrameModel(cfg)
    truth = _opd(cfg, [50.0, 150.0, 300.0, 450.0] * 2, seed=1)
    clean = model.intensity(truth).numpy()
    frames = torch.as_tensor(
        add_noise(
            clean,
            np.arange(8),
            seed=5,
            stream=0,
            photons=1e6,
            read_noise_e=1.0,
            pupil_pixels=model.pupil_pixels,
        )
    )
    noise = model.noise()
    # the truth fails at z = 3 with probability 1e-3 per sample
    assert good_fit(noise, model.intensity(truth), frames, z_max=3.0).all()
    # 20 nm RMS off: z = 5-900 over these samples (10 nm gives z ~ 2 at 450 nm, where the
    # frames hold least information: a coin toss at z_max = 2 for any noise draw)
    off = truth + _opd(cfg, [20.0] * 8, seed=2)
    assert not good_fit(noise, model.intensity(off), frames).any()


class _Oracle:
    """An `Estimator` that knows the truth but sees it only in one orientation of the
    frames (a network with a bad view): elsewhere it returns a flat OPD."""

    def __init__(self, cfg, frames: np.ndarray, truth: np.ndarray, symmetry) -> None:
        self.name, self.npix = "oracle", cfg.pupil.npix
        self.wavelengths_m = list(cfg.wavelengths_m)
        self.mask = FrameModel(cfg).mask
        self.frames, self.truth, self.symmetry = frames, truth, symmetry

    def estimate(self, intensities, wavelengths_m=None) -> np.ndarray:
        x = np.asarray(intensities)
        turned = _transform(self.frames[: len(x)], *self.symmetry)
        if np.allclose(x, turned):
            return np.ascontiguousarray(_transform(self.truth[: len(x)], *self.symmetry))
        return np.zeros((len(x), self.npix, self.npix), np.float32)


def test_restarts_leave_a_local_minimum_from_another_orientation() -> None:
    # A flat start for 300 nm RMS lies outside the fit's basin (~125 nm from flat): the
    # fit stalls with a misfit far above the noiseless floor. The restarts try the other
    # orientations of the frames; the oracle's quarter-turned view starts in the basin.
    cfg = _cfg(32)
    model = FrameModel(cfg)
    truth = _opd(cfg, [300.0, 350.0], seed=3)
    frames = model.intensity(truth).float().numpy()
    start = (truth + _opd(cfg, [30.0, 30.0], seed=4)).float().numpy()
    base = _Oracle(cfg, frames, start, (1, False))  # a quarter turn: not its own inverse
    mask = model.mask

    def err(opd: np.ndarray) -> np.ndarray:
        d = opd[:, mask] - truth.numpy()[:, mask]
        return (d - d.mean(1, keepdims=True)).std(1)

    single = RefinedEstimator(base, cfg, restarts=0)
    assert np.all(err(single.estimate(frames)) > 50)
    assert not single.last_report.good_fit.any()
    assert (single.last_report.misfit > NOISELESS_MISFIT).all()
    multi = RefinedEstimator(base, cfg)
    assert np.all(err(multi.estimate(frames)) < 1.0)
    rep = multi.last_report
    # the quarter turn is the first restart
    assert rep.good_fit.all() and (rep.starts == 2).all()
    assert (rep.iterations > single.last_report.iterations).all()


def test_symmetries_are_inverted_and_the_engine_commutes_with_them() -> None:
    cfg = _cfg(16)
    model = FrameModel(cfg)
    opd = _opd(cfg, [200.0], seed=6).numpy()
    frames = model.intensity(torch.as_tensor(opd)).numpy()
    for k in range(4):
        for t in (False, True):
            np.testing.assert_array_equal(_untransform(_transform(opd, k, t), k, t), opd)
            turned = model.intensity(torch.as_tensor(np.ascontiguousarray(_transform(opd, k, t))))
            np.testing.assert_allclose(turned.numpy(), _transform(frames, k, t), atol=1e-12)


def test_zonal_mode_fits_what_the_modes_cannot() -> None:
    # Noll 2-36 at 150 nm plus 10 nm RMS of Noll 37-66 (outside the modal fit's span),
    # noiseless, 32 px. The modal fit leaves about the out-of-span part (11.5 nm); the
    # zonal polish of it, with its prior on the departure from the modal fit, gets to
    # 0.05 nm (asserted < 1 nm), and keeps an in-span truth at the modal fit's 4e-5 nm.
    cfg = _cfg(32)
    model = FrameModel(cfg)
    in_span = _opd(cfg, [150.0, 150.0], seed=7)
    g = torch.Generator().manual_seed(8)
    c_hi = torch.randn(2, 30, generator=g, dtype=torch.float64)
    c_hi = c_hi / c_hi.norm(dim=1, keepdim=True) * 10.0
    high = torch.einsum("bj,jhw->bhw", c_hi, torch.as_tensor(zernike_basis(range(37, 67), 32)))
    mask = model.mask
    for truth, zonal_max in ((in_span + high, 1.0), (in_span, 0.01)):
        frames = model.intensity(truth).float().numpy()
        start = (truth + _opd(cfg, [20.0, 20.0], seed=9)).numpy()
        base = _Oracle(cfg, frames, start, (0, False))

        def err(est: RefinedEstimator, truth=truth, frames=frames) -> np.ndarray:
            d = est.estimate(frames)[:, mask] - truth.numpy()[:, mask]
            return (d - d.mean(1, keepdims=True)).std(1)

        modal = err(RefinedEstimator(base, cfg, restarts=0))
        zonal = err(RefinedEstimator(base, cfg, mode="zonal", restarts=0, max_iter=30))
        assert np.all(zonal < zonal_max), (zonal, modal)
        if truth is not in_span:
            assert np.all(modal > 7) and np.all(zonal < 0.5 * modal), (zonal, modal)


def test_unweighted_fit_of_noisy_frames_is_judged_by_their_noise() -> None:
    # weighted=False fits by least squares, but the goodness of fit is the frames' own:
    # starts 5 nm off converge to good fits with no restarts.
    cfg = _cfg(32, photons=1e6)
    model = FrameModel(cfg)
    truth = _opd(cfg, [80.0, 200.0], seed=10)
    frames = add_noise(model.intensity(truth).numpy(), np.arange(2), seed=2, stream=0,
                       photons=1e6, read_noise_e=1.0, pupil_pixels=model.pupil_pixels)  # fmt: skip
    start = (truth + _opd(cfg, [5.0, 5.0], seed=11)).numpy()
    est = RefinedEstimator(_Oracle(cfg, frames, start, (0, False)), cfg, weighted=False)
    est.estimate(frames)
    assert est.last_report.good_fit.all() and (est.last_report.starts == 1).all()


class _Views:
    """An `Estimator` that sees the truth in every orientation of the frames with an error
    of its own per orientation (a network: its errors differ between views), and one bad
    view (300 nm off) as it is."""

    def __init__(self, cfg, frames: np.ndarray, truth: np.ndarray) -> None:
        self.name, self.npix = "views", cfg.pupil.npix
        self.wavelengths_m = list(cfg.wavelengths_m)
        self.mask = FrameModel(cfg).mask
        self.frames, self.truth, self.cfg = frames, truth, cfg
        self.calls = 0

    def estimate(self, intensities, wavelengths_m=None) -> np.ndarray:
        self.calls += 1
        x = np.asarray(intensities)
        for i, (k, t) in enumerate((k, t) for t in (False, True) for k in range(4)):
            if np.allclose(x, _transform(self.frames, k, t)):
                rms = [300.0 if i == 0 else 20.0] * len(x)
                off = self.truth + _opd(self.cfg, rms, seed=20 + i).numpy()
                return np.ascontiguousarray(_transform(off, k, t)).astype(np.float32)
        raise AssertionError("frames seen in no orientation")


def test_first_start_is_the_median_of_the_views() -> None:
    # Noiseless, 32 px, 350 nm: the base's estimate of the frames as they are is 300 nm
    # off (outside the fit's basin), its seven turned views 20 nm off each in directions
    # of their own. views=1 fits the bad view first and must restart; the median of all
    # eight views is within ~10 nm (the one bad view is outvoted): one start, good fit.
    cfg = _cfg(32)
    model = FrameModel(cfg)
    truth = _opd(cfg, [350.0], seed=5)
    frames = model.intensity(truth).float().numpy()
    base = _Views(cfg, frames, truth.numpy())
    one = RefinedEstimator(base, cfg, views=1)
    one.estimate(frames)
    assert one.views == 1 and (one.last_report.starts > 1).all()
    base.calls = 0
    median = RefinedEstimator(base, cfg, views=8)
    opd = median.estimate(frames)
    rep = median.last_report
    assert base.calls == 8 and rep.good_fit.all() and (rep.starts == 1).all(), rep
    d = (opd - truth.numpy())[:, model.mask]
    assert (d - d.mean(1, keepdims=True)).std(1).max() < 0.01
    # the default: every view for a network, the frames as they are for other bases
    assert RefinedEstimator(base, cfg).views == 1
