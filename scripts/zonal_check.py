"""Modal against zonal refinement, in the modes' span and with aberrations outside it.

    python3 scripts/zonal_check.py RUN TEST.h5 [N]

The first N (16) noiseless test samples, and the same with 10 nm RMS of Noll 37-66
added (frames made by the refinement's engine); the network of RUN gives the start.
Prints ms/sample, median and largest residual RMS [nm], median misfit and iterations.
"""

from __future__ import annotations

import sys
import time

import h5py
import numpy as np
import torch

from recon.estimators import NetworkEstimator
from recon.refine import FrameModel, RefinedEstimator
from sim.config import SimConfig
from sim.zernike import zernike_basis


def main() -> None:
    run, data = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 16
    with h5py.File(data, "r") as f:
        cfg = SimConfig.model_validate_json(f.attrs["config"])
        frames = f["intensity"][:n]
        opd = f["opd"][:n].astype(np.float64)
        mask = np.asarray(f["pupil"][:]) > 0
    net = NetworkEstimator.from_checkpoint(run)
    npix = cfg.pupil.npix
    c = np.random.default_rng(0).normal(size=(n, 30))
    c *= 10 / np.linalg.norm(c, axis=1, keepdims=True)
    opd_hi = opd + np.einsum("bj,jhw->bhw", c, zernike_basis(list(range(37, 67)), npix))
    frames_hi = FrameModel(cfg).intensity(torch.as_tensor(opd_hi)).float().numpy()
    for name, x, truth in (("in span", frames, opd), ("+10 nm Noll 37-66", frames_hi, opd_hi)):
        for mode in ("modal", "zonal"):
            est = RefinedEstimator(net, cfg, mode=mode)
            t0 = time.perf_counter()
            out = est.estimate(x)
            ms = 1e3 * (time.perf_counter() - t0) / n
            d = out - truth
            d = d - d[:, mask].mean(1)[:, None, None]
            e = np.sqrt((d[:, mask] ** 2).mean(1))
            rep = est.last_report
            print(f"{name:18s} {mode}: {ms:.0f} ms/sample, residual median {np.median(e):.3g} "
                  f"nm, max {e.max():.3g} nm, misfit {np.median(rep.misfit):.2g}, "
                  f"iterations {np.median(rep.iterations):.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
