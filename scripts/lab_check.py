"""A lab's frames as FITS in ADU: noise stated or measured, and calibration from FITS.

    python3 scripts/lab_check.py RUN [OUT] [--noise-only] [--seed S]   # OUT: studies/lab

RUN: a network's run folder (e.g. studies/refine_after/runs/phenn/*, the quick config's
PhENN trained on noiseless frames by scripts/refinement_tables.sh, or the SPHERE run of
scripts/sphere_walkthrough.sh). Frames of the run's own system (Noll 2-36) at 1e7
photons and 1.5 e- read noise, as a camera at 0.8 e-/ADU with a 200 ADU bias would record
them (rounded to whole ADU, inside a frame 32 px larger than the pupil grid), with a
master clear and dark frame.

1. Noise: 200 frames of 0-500 nm RMS (drawn from --seed, default 1) through
   `load_lab_frames` and the `Reconstructor`
   (modal refinement) with the noise (a) stated (gain and read noise), (b) measured from
   the frames, (c) the checkpoint's noiseless system (the old default). Per 50 nm bin:
   median residual / median Cramer-Rao bound; restarted frames, and of those the noise's
   false alarms (frames whose truth itself fails `good_fit`: a restart no start avoids);
   ms per frame.
2. Calibration: the dot 3 % narrower and 5 % deeper, the pupil 0.5 px off in x; 32 frames
   of 20-150 nm RMS; `recon calibrate --frames ... --run RUN --gain 0.8 --read-noise 1.5`
   (unknown aberrations: the network's refined estimates start it); 40 test frames
   refined with the nominal, the exact and the calibrated system (skipped with
   --noise-only; 13 minutes on 2 cores).
Writes OUT/lab_check.json and prints the tables.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from astropy.io import fits

from data.lab import load_lab_frames
from recon.evaluation.crb import crb_rms_nm
from recon.evaluation.metrics import residual_rms_nm
from recon.models import read_meta
from recon.reconstructor import Reconstructor
from recon.refine import FrameModel, NoiseModel, good_fit, load_calibration
from sim.config import SimConfig
from sim.detector import add_noise
from sim.zernike import zernike_basis

GAIN, BIAS, PHOTONS, READ = 0.8, 200.0, 1e7, 1.5
TRUE_SYSTEM = (0.97, 1.05, 0.5, 0.0, 1.0)
OFFSET = (16, 8)  # the pupil grid's corner in the camera frame (load_lab_frames finds it)


def camera(x: np.ndarray, per_pixel: float) -> np.ndarray:
    """Normalised frames (..., N, N) -> ADU in an (N + 32) x (N + 36) frame, rounded."""
    n = x.shape[-1]
    raw = np.full((*x.shape[:-2], n + 32, n + 36), BIAS)
    y0, x0 = OFFSET
    raw[..., y0 : y0 + n, x0 : x0 + n] += x * per_pixel / GAIN
    return np.round(raw)


def simulate(cfg, system, rms: np.ndarray, seed: int):
    """OPD (B, N, N) [nm] of Noll 2-36 at the given RMS, and noisy frames of `system`."""
    model = FrameModel(cfg, dtype=torch.float64, system=system)
    basis = zernike_basis(list(range(2, 37)), cfg.pupil.npix)
    c = np.random.default_rng(seed).normal(size=(len(rms), 35))
    c *= rms[:, None] / np.linalg.norm(c, axis=1, keepdims=True)
    opd = np.einsum("bj,jhw->bhw", c, basis)
    clean = model.intensity(model.tensor(opd)).numpy()
    frames = add_noise(clean, np.arange(len(rms)), seed, 7, PHOTONS, READ, model.pupil_pixels)
    clear = np.repeat((model.amplitude**2).numpy()[None], len(cfg.wavelengths_um), axis=0)
    return opd, frames, clear, model


def write_fits(folder: Path, name: str, frames, clear, per_pixel: float) -> dict[str, Path]:
    paths = {k: folder / f"{name}_{k}.fits" for k in ("frames", "clear", "dark")}
    fits.writeto(paths["frames"], camera(frames, per_pixel), overwrite=True)
    fits.writeto(paths["clear"], camera(clear, per_pixel), overwrite=True)
    fits.writeto(paths["dark"], camera(np.zeros_like(clear[0]), 0.0), overwrite=True)
    return paths


def noise_part(run: Path, cfg, folder: Path, seed: int = 1) -> dict:
    n = 200
    rms = np.random.default_rng(seed).uniform(0, 500, n)
    truth, frames, clear, model = simulate(cfg, None, rms, seed=10 + seed)
    per_pixel = PHOTONS / model.pupil_pixels
    paths = write_fits(folder, "noise", frames, clear, per_pixel)
    lab = load_lab_frames(paths["frames"], paths["clear"], paths["dark"], npix=cfg.pupil.npix)
    basis = model.tensor(zernike_basis(list(range(2, 37)), cfg.pupil.npix))
    true_noise = NoiseModel.from_photons(PHOTONS, READ, model.pupil_pixels)
    crb = np.concatenate(
        [crb_rms_nm(model, truth[a : a + 20], basis, true_noise) for a in range(0, n, 20)]
    )
    cases = {
        "stated (gain, read noise)": NoiseModel.from_camera(
            lab.clear_level, GAIN, READ, lab.pixel_area
        ),
        "measured from the frames": "estimate",
        "checkpoint's system (noiseless; the old default)": "system",
    }
    out = {}
    clear_t = torch.as_tensor(np.broadcast_to(lab.clear, lab.intensity.shape).copy())
    at_truth = model.intensity(model.tensor(truth), model.measured_amplitude(clear_t))
    frames_t = torch.as_tensor(lab.intensity, dtype=torch.float64)
    for label, noise in cases.items():
        rec = Reconstructor.from_checkpoint(run, refine="modal", noise=noise)
        t0 = time.perf_counter()
        pred = rec(lab.intensity, clear=lab.clear)
        seconds = time.perf_counter() - t0
        res = residual_rms_nm(truth, pred.opd_nm, model.mask)
        rep = pred.refine_report
        judge = rec.refined.frame_noise
        truth_good = good_fit(judge, at_truth, frames_t).numpy()
        bins = np.arange(0, 501, 50)
        ratios = []
        for lo, hi in itertools.pairwise(bins):
            sel = (rms >= lo) & (rms < hi)
            ratios.append(float(np.median(res[sel]) / np.median(crb[sel])))
        out[label] = {
            "median_residual_nm": float(np.median(res)),
            "residual_over_crb_per_50nm_bin": ratios,
            "restarted": int((rep.starts > 1).sum()),
            "restarted_truth_poor": int(((rep.starts > 1) & ~truth_good).sum()),
            "good_fit": int(rep.good_fit.sum()),
            "ms_per_frame": 1e3 * seconds / n,
            "noise": None
            if rec.noise_estimate is None
            else rec.noise_estimate.describe(model.pupil_pixels, lab.clear_level),
        }
    return {"frames": n, "seed": seed, "median_crb_nm": float(np.median(crb)), "cases": out}


def calibration_part(run: Path, cfg, folder: Path) -> dict:
    rms = np.linspace(20, 150, 32)
    _, frames, clear, model = simulate(cfg, TRUE_SYSTEM, rms, seed=21)
    per_pixel = PHOTONS / model.pupil_pixels
    cal_paths = write_fits(folder, "calib", frames, clear, per_pixel)
    cal = folder / "calibration.json"
    cmd = [
        sys.executable,
        "-c",
        "from recon.cli import app; app()",
        "calibrate",
        "--frames",
        str(cal_paths["frames"]),
        "--clear",
        str(cal_paths["clear"]),
        "--dark",
        str(cal_paths["dark"]),
        "--run",
        str(run),
        "--n",
        "8",
        "--gain",
        str(GAIN),
        "--read-noise",
        str(READ),
        "--out",
        str(cal),
        "--overwrite",
    ]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    cal_seconds = time.perf_counter() - t0
    fitted = load_calibration(cal)
    test_rms = np.linspace(10, 200, 40)
    truth, frames, clear, _ = simulate(cfg, TRUE_SYSTEM, test_rms, seed=31)
    paths = write_fits(folder, "calib_test", frames, clear, per_pixel)
    lab = load_lab_frames(paths["frames"], paths["clear"], paths["dark"], npix=cfg.pupil.npix)
    noise = NoiseModel.from_camera(lab.clear_level, GAIN, READ, lab.pixel_area)
    out = {
        "fitted_system": list(fitted),
        "true_system": list(TRUE_SYSTEM),
        "calibrate_seconds": cal_seconds,
    }
    for label, system in (("nominal", None), ("exact", TRUE_SYSTEM), ("calibrated", fitted)):
        rec = Reconstructor.from_checkpoint(run, refine="modal", system=system, noise=noise)
        pred = rec(lab.intensity, clear=lab.clear)
        out[f"median_residual_nm_{label}"] = float(
            np.median(residual_rms_nm(truth, pred.opd_nm, model.mask))
        )
    out["calibrated_over_exact"] = (
        out["median_residual_nm_calibrated"] / out["median_residual_nm_exact"]
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a network's run folder")
    parser.add_argument("out", nargs="?", type=Path, default=Path("studies/lab"))
    parser.add_argument("--noise-only", action="store_true", help="skip the calibration")
    parser.add_argument("--seed", type=int, default=1, help="the noise part's frames")
    args = parser.parse_args()
    run, folder, seed = args.run, args.out, args.seed
    folder.mkdir(parents=True, exist_ok=True)
    meta = read_meta(run)
    cfg = SimConfig.model_validate(meta["sim_config"]).with_overrides(
        **{"detector.photons": PHOTONS, "detector.read_noise_e": READ}
    )
    result = {"run": str(run), "noise": noise_part(run, cfg, folder, seed)}
    if not args.noise_only:
        result["calibration"] = calibration_part(run, cfg, folder)
    (folder / "lab_check.json").write_text(json.dumps(result, indent=1))
    nz = result["noise"]
    print(
        f"\n{nz['frames']} FITS frames, 1e7 photons, 1.5 e-, gain 0.8 e-/ADU; "
        f"median CRB {nz['median_crb_nm']:.3g} nm"
    )
    print(
        f"{'noise':<50} {'median nm':>9} {'max bin/CRB':>11} {'restarted':>9} "
        f"{'truth poor':>10} {'ms/fr':>6}"
    )
    for label, c in nz["cases"].items():
        print(
            f"{label:<50} {c['median_residual_nm']:>9.3g} "
            f"{max(c['residual_over_crb_per_50nm_bin']):>11.2f} {c['restarted']:>9d} "
            f"{c['restarted_truth_poor']:>10d} {c['ms_per_frame']:>6.0f}"
        )
        if c["noise"]:
            print(f"    {c['noise']}")
    if "calibration" not in result:
        return
    cb = result["calibration"]
    print(
        "\ncalibration from FITS: fitted",
        [round(v, 4) for v in cb["fitted_system"]],
        "true",
        list(TRUE_SYSTEM),
    )
    print(
        f"median residual nm: nominal {cb['median_residual_nm_nominal']:.3g}, exact "
        f"{cb['median_residual_nm_exact']:.3g}, calibrated "
        f"{cb['median_residual_nm_calibrated']:.3g} ({cb['calibrated_over_exact']:.3f}x)"
    )


if __name__ == "__main__":
    main()
