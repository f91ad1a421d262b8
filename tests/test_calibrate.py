"""Self-calibration: dot diameter and depth, pupil shift and scale, fluxes, with the OPD."""

from __future__ import annotations

import numpy as np
import torch

from recon.estimators.calibrate import NOMINAL, ParametricZWFS, calibrate
from recon.estimators.forward import NoiseModel
from sim.config import load_sim_config
from sim.detector import add_noise


def test_calibration_recovers_the_exact_model_residual() -> None:
    # Frames of a system with the dot 5 % deeper and 3 % narrower and the pupil 0.5 px
    # off (and +-3 % frame fluxes), at 1e7 photons and 1 e- read noise (24 px, Noll 2-11,
    # 4 samples of 40-150 nm). Refitted with the nominal system the model error leaves
    # many nm; with the exact system the residual is the noise floor (~0.1-0.2 nm); the
    # calibrated fit must land within 1.2x of that floor (the target), and on the
    # true system parameters to well within their offsets.
    cfg = load_sim_config("quick").with_overrides(
        **{"pupil.npix": 24, "detector.photons": 1e7, "detector.read_noise_e": 1.0}
    )
    model = ParametricZWFS(cfg, list(range(2, 12)))
    n_modes, b = len(model.modes), 4
    g = torch.Generator().manual_seed(0)
    c = torch.randn(b, n_modes, generator=g, dtype=torch.float64)
    c = c / c.norm(dim=1, keepdim=True) * torch.linspace(40, 150, b, dtype=torch.float64)[:, None]
    flux = 0.03 * torch.randn(b, 4, generator=g, dtype=torch.float64)
    true_sys = (0.97, 1.05, 0.5, 0.0, 1.0)
    with torch.no_grad():
        clean = model.intensity(c, torch.tensor(true_sys, dtype=torch.float64), flux).numpy()
    pixels = int(model.mask.sum())
    frames = add_noise(clean, np.arange(b), 1, 2, 1e7, 1.0, pixels)
    noise = NoiseModel(1e7 / pixels, 1.0)
    start = c + 10 * torch.randn(b, n_modes, generator=g, dtype=torch.float64) / n_modes**0.5

    def residual(fit) -> float:  # median OPD residual RMS [nm] over the samples
        d = np.einsum("bj,jhw->bhw", fit.coeffs_nm - c.numpy(), model.basis.numpy())
        d = d[:, model.mask]
        return float(np.median((d - d.mean(1, keepdims=True)).std(1)))

    nominal = calibrate(model, frames, start, NOMINAL, False, noise, max_iter=4)
    exact = calibrate(model, frames, start, true_sys, False, noise, max_iter=10)
    calibrated = calibrate(model, frames, start, NOMINAL, True, noise, max_iter=15)
    floor = residual(exact)
    assert 0 < floor < 1.0
    assert residual(nominal) > 5 * floor  # the mismatch matters
    assert residual(calibrated) <= 1.2 * floor, (residual(calibrated), floor)
    off = np.abs(calibrated.system - np.asarray(true_sys))
    assert np.all(off < [3e-3, 3e-3, 0.02, 0.02, 3e-3]), off
    np.testing.assert_allclose(calibrated.log_flux, flux.numpy(), atol=3e-3)
    assert calibrated.misfit < 1.1  # chi^2 per pixel ~1: the fit is at the noise
