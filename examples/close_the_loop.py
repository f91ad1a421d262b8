"""A lab script: calibrate the camera, close the loop with a trained network, log.

    python3 examples/close_the_loop.py RUN [--iterations 10] [--gain 0.5] [--log loop.csv]

RUN: a `recon train` run folder (or checkpoint). Against the simulated bench
(`sim.testbench.SimulatedBench`, the run's own system with a 60 nm aberration) by
default. On hardware, replace `make_bench` with your camera and DM objects: the loop
calls only

    camera.grab() -> (L, H, W) [ADU]; camera.grab_clear(n), camera.grab_dark(n) -> the
    mean of n frames with the dot out / the light off; camera.gain_e_per_adu,
    camera.read_noise_e; dm.command (A,) [nm of surface]; dm.apply(command);
    dm.correction(opd_nm, pupil) -> the command change that cancels an OPD (N, N) [nm].

Units (docs/lab.md): OPD in nm, piston removed; the DM surface is OPD / 2 in reflection.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from data.lab import lab_frames
from recon.reconstructor import Reconstructor
from recon.refine import NoiseModel


def calibrate_camera(camera, rec: Reconstructor, n: int = 16):
    """Dark and clear frames (the dot out), and the noise stated from the camera."""
    dark, clear = camera.grab_dark(n), camera.grab_clear(n)
    first = lab_frames(camera.grab(), clear, dark, npix=rec.estimator.npix)
    rec.use_noise(NoiseModel.from_camera(first.clear_level, camera.gain_e_per_adu,
                                         camera.read_noise_e, first.pixel_area))  # fmt: skip
    return dark, clear


def close_the_loop(
    camera, dm, rec: Reconstructor, iterations: int = 10, gain: float = 0.5, truth=None
) -> list[dict]:
    """Measure, correct by gain x estimate, repeat; one log row per iteration.
    `truth`: a callable giving the true residual RMS [nm] (a simulated bench only)."""
    dark, clear = calibrate_camera(camera, rec)
    rows = []
    for k in range(iterations):
        lab = lab_frames(camera.grab(), clear, dark, npix=rec.estimator.npix)
        pred = rec(lab.intensity, clear=lab.clear)  # (1, N, N) [nm]
        opd = pred.opd_nm[0]
        dm.apply(dm.command + gain * dm.correction(opd, pred.pupil > 0))
        rows.append({
            "iteration": k,
            "measured_rms_nm": float(np.std(opd[pred.pupil > 0])),
            "true_rms_nm": None if truth is None else truth(),
            "command_rms_nm": float(np.std(dm.command)),
            "fit": "good" if pred.refine_report is None or pred.refine_report.good_fit[0]
            else "poor",
        })  # fmt: skip
    return rows


def make_bench(rec: Reconstructor, rms_nm: float = 60.0, seed: int = 1):
    """The simulated bench of the run's system at 1e7 photons, 1 e- read noise, gain 0.8
    e-/ADU, with a random Noll 2-15 aberration of `rms_nm` [nm RMS]."""
    from sim.config import SimConfig
    from sim.testbench import SimulatedBench
    from sim.zernike import zernike_basis

    cfg = SimConfig.model_validate(rec.estimator.meta["sim_config"])
    cfg = cfg.with_overrides(**{"detector.photons": 1e7, "detector.read_noise_e": 1.0})
    c = np.random.default_rng(seed).normal(size=14)
    opd = np.tensordot(
        rms_nm * c / np.linalg.norm(c), zernike_basis(range(2, 16), cfg.pupil.npix), 1
    )
    return SimulatedBench(cfg, opd, gain_e_per_adu=0.8, seed=seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="recon train run folder or checkpoint")
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--gain", type=float, default=0.5, help="loop gain (0, 1]")
    parser.add_argument("--log", type=Path, default=Path("loop.csv"), help="CSV log")
    args = parser.parse_args()
    rec = Reconstructor.from_checkpoint(args.run, refine="modal")
    bench = make_bench(rec)
    rows = close_the_loop(bench.camera, bench.dm, rec, args.iterations, args.gain,
                          truth=bench.residual_rms_nm)  # fmt: skip
    with args.log.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    for r in rows:
        print(f"{r['iteration']:>3} measured {r['measured_rms_nm']:7.2f} nm  "
              f"true {r['true_rms_nm']:7.2f} nm  fit {r['fit']}")  # fmt: skip
    print(f"log: {args.log}")


if __name__ == "__main__":
    main()
