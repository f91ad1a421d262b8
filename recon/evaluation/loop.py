"""`recon loop`: closed-loop correction with any estimator and the project's ZWFS engine.

For each test sample: simulate its ZWFS frames, estimate the OPD, subtract
gain x estimate from the wavefront on every lit pupil pixel (an ideal deformable
mirror with the detector's sampling), re-simulate, repeat `iterations` times. The
residual RMS (piston removed, inside the pupil) is recorded after each iteration;
the closed-loop capture range (`recon.evaluation.metrics.closed_loop_capture_range`) is judged
on the final residual. Frames get the dataset's detector noise, drawn from streams
of their own ("loop-<k>"), when its config has any.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data.schema import DatasetError
from recon.estimators.base import Estimator, needs_clear, run_estimate
from recon.evaluation.metrics import closed_loop_capture_range
from recon.evaluation.testset import open_test_set
from sim.aberrations import stream_id
from sim.detector import add_noise
from sim.zwfs import ZWFSModel

__all__ = ["closed_loop"]


def closed_loop(
    estimator: Estimator,
    data_path: str | os.PathLike,
    iterations: int = 5,
    gain: float = 1.0,
    batch_size: int = 32,
    max_samples: int | None = None,
    device: str = "cpu",
    progress: Callable[[int], None] | None = None,
    detector: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Run the loop on the test set's aberrations; returns the loop report (JSON-able).

    `detector`: config overrides of the frames' noise (``detector.photons``, ...).

    Returns:
        ``per_sample.residual_rms_nm``: (n, iterations + 1) [nm], column 0 the
        aberration itself; ``median_by_iteration_nm``; ``capture_range`` (closed loop,
        judged on the last column against the true RMS in column 0).
    """
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if not 0 < gain <= 2:
        raise ValueError(f"gain must lie in (0, 2], got {gain}")
    path = Path(data_path)
    with open_test_set(path) as ts:
        cfg = ts.sim_config().with_overrides(**(detector or {}))
        n = ts.n if max_samples is None else min(int(max_samples), ts.n)
        opd_all = np.asarray(ts.file["opd"][:n], dtype=np.float64)  # (n, H, W) [nm]
        clear = ts.clear(0, 1) if needs_clear(estimator) else None  # the nominal pupil's
    if cfg.realistic:
        raise DatasetError(
            f"{path} varies the illumination or the system per sample or file; the closed "
            "loop re-simulates the nominal system (use a test set of the nominal system)"
        )
    if cfg.detector.binning != 1:
        raise DatasetError(
            f"{path} has detector.binning = {cfg.detector.binning}: the closed loop needs the "
            "unbinned OPD the engine propagates (binning 1)"
        )
    model = ZWFSModel(cfg, device=device)
    mask = model.mask.cpu().numpy()
    lit = (model.pupil > 0).cpu().numpy()
    if estimator.npix != mask.shape[-1]:
        raise ValueError(
            f"the estimator needs {estimator.npix} px, the dataset has {mask.shape[-1]}"
        )
    noisy = cfg.detector.photons is not None or cfg.detector.read_noise_e > 0
    pupil_pixels = int(model.detector_mask.sum())
    residual = np.empty((n, iterations + 1))
    for a in range(0, n, batch_size):
        b = min(a + batch_size, n)
        opd = opd_all[a:b].copy()
        residual[a:b, 0] = opd[:, mask].std(axis=1)
        for k in range(1, iterations + 1):
            with torch.no_grad():
                frames = (
                    model(torch.as_tensor(opd, device=model.pupil.device)).float().cpu().numpy()
                )
            if noisy:
                frames = add_noise(
                    frames,
                    np.arange(a, b),
                    cfg.seed,
                    stream_id(f"loop-{k}"),
                    cfg.detector.photons,
                    cfg.detector.read_noise_e,
                    pupil_pixels,
                )
            guess = run_estimate(estimator, frames, cfg.wavelengths_m, clear)  # (B, H, W)
            opd = opd - gain * np.where(lit, guess, 0.0)
            residual[a:b, k] = opd[:, mask].std(axis=1)
        if progress:
            progress(b - a)
    cr = closed_loop_capture_range(residual[:, 0], residual[:, -1])
    return {
        "kind": "zwfs-loop-report",
        "estimator": getattr(estimator, "name", type(estimator).__name__),
        "wavelengths_um": [round(w * 1e6, 6) for w in estimator.wavelengths_m],
        "data": str(path.absolute()),
        "n_samples": n,
        "iterations": iterations,
        "gain": gain,
        "noise": noisy,
        "photons": cfg.detector.photons,
        "read_noise_e": float(cfg.detector.read_noise_e),
        "median_by_iteration_nm": np.median(residual, axis=0).tolist(),
        "capture_range_nm": cr.capture_range_nm,
        "largest_passing_nm": cr.largest_passing_nm,
        "capture_range": cr.to_dict(),
        "per_sample": {"residual_rms_nm": residual.tolist()},
    }
