"""The Cramer-Rao bound of the modal coefficients and the OPD RMS it implies, per sample.

For frames with photon noise (n counts per normalised unit per pixel) and read noise
r [e-], pixel p of channel l has the shifted-Poisson variance of `NoiseModel.variance`,
(n I_lp + r^2) / n^2. The Fisher information of the Noll 2..J coefficients c [nm RMS]
is then

    F = sum_lp (dI_lp/dc) (dI_lp/dc)^T / variance_lp

with the engine's Jacobian at the true OPD (`FrameModel.modal_jacobian`): the
information of the very likelihood the fits maximise. Any unbiased estimator has
Cov(c_hat) >= F^-1, so its mean squared OPD error over the pupil (piston removed) is at
least trace(G F^-1), G the Gram matrix of the piston-free modes over the pupil pixels
divided by their number; ``crb_rms_nm`` is its square root [nm].
"""

from __future__ import annotations

import numpy as np
import torch

from recon.refine.forward import FrameModel
from recon.refine.noise import NoiseModel
from sim.segments import segment_means_weights

__all__ = ["crb_rms_nm", "fisher_covariance", "segment_piston_crb_nm", "zonal_crb_rms_nm"]


def fisher_covariance(
    model: FrameModel, opd_nm: np.ndarray, basis: torch.Tensor, noise: NoiseModel
) -> torch.Tensor:
    """The bound's covariance F^-1 (B, J, J) [nm^2] of the coefficients of `basis` (J, N, N)
    at true OPD maps (B, N, N) [nm], float64 (pseudo-inverse where F is singular)."""
    if not noise.noisy:
        raise ValueError("the Cramer-Rao bound needs a photon level (detector.photons)")
    opd = model.tensor(opd_nm)
    lin = model.linearise(opd)
    inv_var = noise.variance(lin.intensity).reciprocal()  # (B, L, N, N)
    jac = model.modal_jacobian(lin, basis.to(model.dtype)).flatten(2)  # (B, J, P)
    fisher = ((jac * inv_var.flatten(1)[:, None]) @ jac.transpose(1, 2)).to(torch.float64)
    try:
        return torch.linalg.inv(fisher)
    except RuntimeError:  # a singular batch: fall back sample by sample
        return torch.stack([torch.linalg.pinv(f) for f in fisher])


def crb_rms_nm(
    model: FrameModel,
    opd_nm: np.ndarray,
    basis: torch.Tensor,
    noise: NoiseModel,
    cov: torch.Tensor | None = None,
) -> np.ndarray:
    """CRB of the OPD RMS [nm] (B,) at true OPD maps (B, N, N) [nm] for modes `basis` (J, N, N).

    `model` should be float64 (the Fisher matrix of bright, well-sampled frames is
    ill-conditioned in float32). NaN where the Fisher matrix is singular. `cov`: the
    `fisher_covariance` already computed for these maps, if any.
    """
    cov = fisher_covariance(model, opd_nm, basis, noise) if cov is None else cov
    mask = torch.as_tensor(model.mask, device=model.device)
    zm = basis.to(torch.float64)[:, mask]
    zm = zm - zm.mean(dim=1, keepdim=True)  # piston-free modes over the pupil
    gram = zm @ zm.T / zm.shape[1]  # (J, J)
    msq = torch.einsum("ij,bji->b", gram, cov)
    return torch.where(msq > 0, msq, torch.nan).sqrt().cpu().numpy()


def zonal_crb_rms_nm(model: FrameModel, opd_nm: np.ndarray, noise: NoiseModel) -> np.ndarray:
    """CRB of the OPD RMS [nm] (B,) over the pupil (piston removed) at true OPD maps
    (B, N, N) [nm] when every lit pixel is a parameter (the zonal fit's model, without
    its prior), one sample at a time; NaN where F is singular beyond the piston.

    F = J^T W J over the lit pixels (`TangentMap.pixel_fisher`, float64) is singular in
    the piston alone (a ZWFS does not see it); F + s u u^T (u the unit piston, s its mean
    diagonal) is not, and its inverse differs from F's pseudo-inverse by u u^T / s, which
    the piston-free metric removes. A bound for unbiased estimators: the zonal fit's
    smoothness prior is a bias that can take it below.
    """
    if not noise.noisy:
        raise ValueError("the Cramer-Rao bound needs a photon level (detector.photons)")
    lit = torch.as_tensor(model.lit, device=model.device).flatten()
    pixels = torch.nonzero(lit).flatten()
    inside = torch.as_tensor(model.mask, device=model.device).flatten()[pixels]  # (K,)
    if int(inside.sum()) != int(torch.as_tensor(model.mask).sum()):
        raise ValueError("the pupil mask must lie inside the lit pupil")
    out = []
    for one in np.asarray(opd_nm):
        lin = model.linearise(model.tensor(one[None]))
        inv_var = noise.variance(lin.intensity).reciprocal()
        fisher = model.tangent_map(lin, torch.float64).pixel_fisher(inv_var, pixels)[0]
        k = fisher.shape[0]
        piston = torch.full((k,), k**-0.5, dtype=torch.float64, device=fisher.device)
        fisher = fisher + fisher.diagonal().mean() * torch.outer(piston, piston)
        factor, info = torch.linalg.cholesky_ex(fisher)
        if int(info) != 0:  # singular beyond the piston: no finite bound
            out.append(float("nan"))
            continue
        cov = torch.cholesky_inverse(factor)[inside][:, inside]
        m = cov.shape[0]
        msq = cov.diagonal().sum() / m - cov.sum() / m**2  # mean of Var(x_i - mean x)
        out.append(float(msq.clamp(min=0).sqrt()))
    return np.asarray(out)


def segment_piston_crb_nm(model: FrameModel, basis: torch.Tensor, cov: torch.Tensor) -> np.ndarray:
    """CRB (B, S) [nm OPD] of each segment's piston error as `recon.evaluation.metrics.
    segment_piston_errors` measures it (its mean over the segment's pixels, less the mean
    over the segments), from the `fisher_covariance` `cov` (B, J, J) of the coefficients
    of `basis` (`sim.segments.segment_fit_basis`)."""
    weights = torch.as_tensor(segment_means_weights(model.cfg), device=cov.device)
    count = weights.shape[0]
    modes = basis.to(device=cov.device, dtype=torch.float64).flatten(1)
    means = weights.flatten(1) @ modes.T  # (S, J): coefficients -> segment means
    to_errors = torch.eye(count, dtype=torch.float64, device=cov.device) - 1.0 / count
    a = to_errors @ means  # (S, J): the metric's linear map of the coefficients
    var = torch.einsum("sj,bjk,sk->bs", a, cov, a)
    return torch.where(var > 0, var, torch.nan).sqrt().cpu().numpy()
