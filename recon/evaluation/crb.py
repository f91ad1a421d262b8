"""The Cramer-Rao bound of the modal coefficients and the OPD RMS it implies, per sample.

For frames with photon noise (Poisson, n counts per normalised unit per pixel) and read
noise r [e-], pixel p of channel l has mean n I_lp(c) counts and variance n I_lp + r^2
(the read noise folded into the Poisson variance, the usual approximation; exact for
r = 0). The Fisher information of the Noll 2..J coefficients c [nm RMS] is then

    F = sum_lp (dI_lp/dc) (dI_lp/dc)^T n^2 / (n I_lp + r^2)

with the engine's float64 Jacobian at the true OPD (`recon.estimators.forward`). Any
unbiased estimator has Cov(c_hat) >= F^-1, so its mean squared OPD error over the pupil
(piston removed) is at least trace(G F^-1), G the Gram matrix of the piston-free modes
over the pupil pixels divided by their number; ``crb_rms_nm`` is its square root [nm].
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import torch

from recon.estimators.forward import FrameModel, NoiseModel
from recon.evaluation.testset import open_test_set
from sim.zernike import zernike_basis

__all__ = ["crb_for_test_set", "crb_rms_nm"]


def crb_rms_nm(
    model: FrameModel, opd_nm: np.ndarray, basis: torch.Tensor, noise: NoiseModel
) -> np.ndarray:
    """CRB of the OPD RMS [nm] (B,) at true OPD maps (B, N, N) [nm] for modes `basis` (J, N, N).

    `model` should be float64 (the Fisher matrix of bright, well-sampled frames is
    ill-conditioned in float32). NaN where the Fisher matrix is singular.
    """
    if not noise.noisy:
        raise ValueError("the Cramer-Rao bound needs a photon level (detector.photons)")
    opd = model.tensor(opd_nm)
    lin = model.linearise(opd)
    inv_var = noise.variance(lin.intensity).reciprocal()  # (B, L, N, N)
    jac = model.modal_jacobian(lin, basis.to(model.dtype)).flatten(2)  # (B, J, P)
    fisher = (jac * inv_var.flatten(1)[:, None]) @ jac.transpose(1, 2)  # (B, J, J)
    mask = torch.as_tensor(model.mask, device=model.device)
    zm = basis.to(torch.float64)[:, mask]
    zm = zm - zm.mean(dim=1, keepdim=True)  # piston-free modes over the pupil
    gram = zm @ zm.T / zm.shape[1]  # (J, J)
    fisher = fisher.to(torch.float64)
    try:
        cov = torch.linalg.inv(fisher)
    except RuntimeError:  # a singular batch: fall back sample by sample
        cov = torch.stack([torch.linalg.pinv(f) for f in fisher])
    msq = torch.einsum("ij,bji->b", gram, cov)
    return torch.where(msq > 0, msq, torch.nan).sqrt().cpu().numpy()


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
        ``crb_rms_nm`` (n,) list, ``modes`` (Noll indices), ``photons`` (clear pupil per
        frame), ``read_noise_e`` and ``counts_per_unit``.
    """
    with open_test_set(data_path) as ts:
        cfg = ts.sim_config()
        n = ts.n if max_samples is None else min(ts.n, int(max_samples))
        opd_all = np.asarray(ts.file["opd"][:n], dtype=np.float64)
    model = FrameModel(cfg, device)
    noise = model.noise()
    j_max = cfg.aberration.noll_max if noll_max is None else int(noll_max)
    modes = list(range(2, j_max + 1))
    basis = model.tensor(zernike_basis(modes, cfg.pupil.npix))
    out = np.empty(n)
    with torch.no_grad():
        for a in range(0, n, batch_size):
            b = min(a + batch_size, n)
            out[a:b] = crb_rms_nm(model, opd_all[a:b], basis, noise)
            if progress:
                progress(b - a)
    return {
        "crb_rms_nm": out.tolist(),
        "modes": modes,
        "photons": cfg.detector.photons,
        "read_noise_e": float(cfg.detector.read_noise_e),
        "counts_per_unit": noise.counts_per_unit,
    }
