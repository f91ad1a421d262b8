"""The Cramer-Rao bound of a noisy test set, per sample (`recon.refine.crb` at each truth)."""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import torch

from recon.evaluation.testset import open_test_set
from recon.refine.crb import crb_rms_nm, fisher_covariance, segment_piston_crb_nm
from recon.refine.forward import FrameModel
from sim.segments import segment_fit_basis
from sim.zernike import zernike_basis

__all__ = ["crb_for_test_set"]


def crb_for_test_set(
    data_path: str | os.PathLike,
    max_samples: int | None = None,
    batch_size: int = 16,
    noll_max: int | None = None,
    device: str = "cpu",
    progress: Callable[[int], None] | None = None,
) -> dict[str, object]:
    """Per-sample CRB [nm] of a noisy test set at its own photon and read-noise level.

    Returns:
        ``crb_rms_nm`` (n,) list, ``modes`` (Noll indices), ``basis`` (the fitted modes'
        labels: on a segmented pupil each segment's piston, tip and tilt and the global
        rest, `segment_fit_basis`, with ``segment_piston_crb_nm`` (n, S) per segment),
        ``photons`` (clear pupil per frame), ``read_noise_e`` and ``counts_per_unit``.
    """
    with open_test_set(data_path) as ts:
        cfg = ts.sim_config()
        n = ts.n if max_samples is None else min(ts.n, int(max_samples))
        opd_all = np.asarray(ts.file["opd"][:n], dtype=np.float64)
    model = FrameModel(cfg, device)
    noise = model.noise()
    j_max = cfg.aberration.noll_max if noll_max is None else int(noll_max)
    modes = list(range(2, j_max + 1))
    segmented = cfg.pupil.geometry == "segmented"
    if segmented:  # the refinement's own modes: per segment, then the global rest
        seg_basis, labels = segment_fit_basis(cfg, j_max)
        basis = model.tensor(seg_basis)
    else:
        basis = model.tensor(zernike_basis(modes, cfg.pupil.npix))
        labels = [f"Noll {j}" for j in modes]
    out = np.empty(n)
    pistons = []
    with torch.no_grad():
        for a in range(0, n, batch_size):
            b = min(a + batch_size, n)
            cov = fisher_covariance(model, opd_all[a:b], basis, noise)  # once for both
            out[a:b] = crb_rms_nm(model, opd_all[a:b], basis, noise, cov)
            if segmented:
                pistons.append(segment_piston_crb_nm(model, basis, cov))
            if progress:
                progress(b - a)
    extra = {"segment_piston_crb_nm": np.concatenate(pistons).tolist()} if segmented else {}
    return {
        **extra,
        "crb_rms_nm": out.tolist(),
        "modes": modes,
        "basis": labels,
        "photons": cfg.detector.photons,
        "read_noise_e": float(cfg.detector.read_noise_e),
        "counts_per_unit": noise.counts_per_unit,
    }
