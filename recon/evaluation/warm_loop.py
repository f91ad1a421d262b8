"""`recon loop --warm`: the frame-rate tracker (`FrameTracker`) on a drifting aberration.

The truth is a random walk of the Noll 2..J coefficients [nm RMS]: it starts at
`start_rms_nm` and moves by exactly `drift_nm` of OPD RMS per frame (a random direction
each frame; Noll-normalised modes, so the coefficients' norm is the OPD RMS). Each
frame is simulated by the engine (`ZWFSModel`) with the system's detector noise, then
tracked one at a time, batch 1. Per frame: the latency [ms], the estimate's error
against the truth [nm RMS, piston removed, in the pupil] and the Cramer-Rao bound at
the truth (`crb_rms_nm`, the noise floor of any unbiased estimate from that frame).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.io import write_json_atomic, write_text_atomic
from recon.refine.crb import crb_rms_nm
from recon.refine.forward import FrameModel
from recon.refine.tracker import DEFAULT_REFRESH, DEFAULT_STEPS, FrameTracker
from sim.aberrations import stream_id
from sim.config import SimConfig
from sim.detector import add_noise
from sim.zernike import zernike_basis
from sim.zwfs import ZWFSModel

__all__ = ["drifting_coefficients", "warm_loop", "write_warm_report"]

SETTLE_FRAMES = 3  # frames after which the residual is judged against the bound


def drifting_coefficients(
    n_modes: int, frames: int, start_rms_nm: float, drift_nm: float, seed: int
) -> np.ndarray:
    """A random walk (frames, n_modes) [nm RMS]: row 0 has norm `start_rms_nm`, each step
    a random direction of norm exactly `drift_nm`."""
    rng = np.random.default_rng(seed)
    unit = rng.standard_normal((frames, n_modes))
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    steps = drift_nm * unit
    steps[0] = start_rms_nm * unit[0]
    return np.cumsum(steps, axis=0)


def warm_loop(
    refined,
    cfg: SimConfig,
    frames: int = 50,
    drift_nm: float = 10.0,
    start_rms_nm: float = 50.0,
    steps: int = DEFAULT_STEPS,
    refresh: int = DEFAULT_REFRESH,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Track a drifting aberration frame by frame; returns the report (JSON-able).

    `refined`: a modal `RefinedEstimator` of `cfg` (its base seeds the first frame and
    poor fits). Returns per-frame ``latency_ms``, ``error_nm``, ``crb_nm``, ``true_rms_nm``,
    ``reseeded``; ``summary`` with the median and 95th-percentile latency of the warm
    frames (all but the first) and the error/CRB ratio after `SETTLE_FRAMES` frames.
    """
    if frames <= SETTLE_FRAMES:
        raise ValueError(f"frames must exceed {SETTLE_FRAMES}, got {frames}")
    if drift_nm < 0 or start_rms_nm < 0:
        raise ValueError(f"drift and start RMS must be >= 0 nm, got {drift_nm}, {start_rms_nm}")
    if cfg.detector.photons is None:
        raise ValueError("the warm loop compares with the noise floor: give --photons")
    if cfg.pupil.geometry == "segmented":
        raise ValueError("the warm loop drifts Noll modes: a segmented pupil is not supported")
    device = refined.model.device
    modes = refined.modes
    coeffs = drifting_coefficients(len(modes), frames, start_rms_nm, drift_nm, seed)
    basis = zernike_basis(modes, cfg.pupil.npix)  # (J, N, N) float64
    truth = np.einsum("fj,jhw->fhw", coeffs, basis)  # (F, N, N) [nm]
    engine = ZWFSModel(cfg, device=device)
    with torch.no_grad():
        clean = engine(torch.as_tensor(truth, device=engine.pupil.device)).cpu().numpy()
    pupil_pixels = int(engine.detector_mask.sum())
    noisy = add_noise(
        clean, np.arange(frames), cfg.seed + seed, stream_id("warm-loop"),
        cfg.detector.photons, cfg.detector.read_noise_e, pupil_pixels,
    ).astype(np.float32)  # fmt: skip
    tracker = FrameTracker(refined, steps=steps, refresh=refresh)
    mask = refined.mask
    latency, error, reseeded, misfit = [], [], [], []
    for k in range(frames):
        out = tracker(noisy[k])
        diff = out.opd_nm[mask] - truth[k][mask]
        error.append(float(np.std(diff)))
        latency.append(out.latency_s * 1e3)
        reseeded.append(bool(out.reseeded))
        misfit.append(out.misfit)
        if progress:
            progress(1)
    exact = FrameModel(cfg, device, torch.float64)
    with torch.no_grad():
        crb = crb_rms_nm(exact, truth, exact.tensor(basis), exact.noise())
    true_rms = [float(np.std(t[mask])) for t in truth]
    ratio = np.asarray(error) / crb
    warm = np.asarray(latency[1:])
    settled = ratio[SETTLE_FRAMES:]
    return {
        "kind": "zwfs-warm-loop-report",
        "estimator": refined.base.name,
        "npix": cfg.pupil.npix,
        "wavelengths_um": [round(w * 1e6, 6) for w in cfg.wavelengths_m],
        "photons": cfg.detector.photons,
        "read_noise_e": float(cfg.detector.read_noise_e),
        "modes": [int(j) for j in modes],
        "frames": frames,
        "drift_nm": drift_nm,
        "start_rms_nm": start_rms_nm,
        "steps": steps,
        "refresh": refresh,
        "seed": seed,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "summary": {
            "latency_median_ms": float(np.median(warm)),
            "latency_p95_ms": float(np.percentile(warm, 95)),
            "latency_mean_ms": float(np.mean(warm)),
            "first_frame_ms": latency[0],
            "settle_frames": SETTLE_FRAMES,
            "error_median_nm": float(np.median(np.asarray(error)[SETTLE_FRAMES:])),
            "crb_median_nm": float(np.median(crb[SETTLE_FRAMES:])),
            "ratio_median": float(np.median(settled)),
            "ratio_max": float(np.max(settled)),
            "reseeds": int(sum(reseeded[1:])),
        },
        "per_frame": {
            "latency_ms": latency,
            "error_nm": error,
            "crb_nm": crb.tolist(),
            "true_rms_nm": true_rms,
            "misfit": misfit,
            "reseeded": reseeded,
        },
    }


def _warm_markdown(rep: dict[str, Any]) -> str:
    s = rep["summary"]
    return "\n".join(
        [
            f"# Warm-started loop: {rep['estimator']}",
            "",
            f"{rep['frames']} frames at {rep['npix']} px, {len(rep['wavelengths_um'])} "
            f"wavelengths, {rep['photons']:.3g} photons, {rep['read_noise_e']:g} e- read "
            f"noise; Noll 2-{max(rep['modes'])} random walk from {rep['start_rms_nm']:g} nm "
            f"RMS, {rep['drift_nm']:g} nm RMS per frame; {rep['steps']} Gauss-Newton "
            f"step(s) per frame, Jacobian refreshed every {rep['refresh']} frame(s); batch 1, "
            f"{rep['threads']} thread(s) on {rep['device']}.",
            "",
            "| latency median [ms] | latency p95 [ms] | first frame [ms] "
            f"| error / CRB after {s['settle_frames']} frames (median, max) "
            "| error median [nm] | CRB median [nm] | reseeds |",
            "|---:|---:|---:|---:|---:|---:|---:|",
            f"| {s['latency_median_ms']:.2f} | {s['latency_p95_ms']:.2f} "
            f"| {s['first_frame_ms']:.0f} | {s['ratio_median']:.2f}, {s['ratio_max']:.2f} "
            f"| {s['error_median_nm']:.3f} | {s['crb_median_nm']:.3f} | {s['reseeds']} |",
            "",
            "Error: RMS of estimate minus truth over the pupil [nm], piston removed. CRB: the "
            "Cramer-Rao bound of that frame at the truth (recon.refine.crb).",
            "",
        ]
    )


def write_warm_report(report: dict[str, Any], out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write warm_loop.json, warm_loop.md and warm_loop.png (error and CRB, latency)."""
    from recon.evaluation.report import _pyplot, jsonable

    plt = _pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": write_json_atomic(out / "warm_loop.json", jsonable(report))}
    paths["markdown"] = write_text_atomic(out / "warm_loop.md", _warm_markdown(report))
    per = report["per_frame"]
    frames = np.arange(report["frames"])
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4.0), constrained_layout=True)
    ax0.plot(frames, per["error_nm"], "-o", ms=3, label="error (estimate - truth)")
    ax0.plot(frames, per["crb_nm"], "--", label="Cramer-Rao bound")
    ax0.set(yscale="log", xlabel="frame", ylabel="RMS [nm]", title=report["estimator"])
    ax1.plot(frames, per["latency_ms"], "-o", ms=3)
    ax1.set(yscale="log", xlabel="frame", ylabel="latency [ms]",
            title=f"{report['steps']} step(s), refresh every {report['refresh']}")  # fmt: skip
    ax0.legend(fontsize=8)
    for ax in (ax0, ax1):
        ax.grid(alpha=0.3)
    fig.savefig(out / "warm_loop.png", dpi=110)
    plt.close(fig)
    paths["png"] = out / "warm_loop.png"
    return paths
