"""The zonal model's Fisher information and Cramer-Rao bound (`recon.refine.crb`)."""

from __future__ import annotations

import numpy as np
import torch

from recon.refine import FrameModel
from recon.refine.crb import crb_rms_nm, zonal_crb_rms_nm
from sim.config import load_sim_config
from sim.zernike import zernike_basis


def _setup(npix: int):
    cfg = load_sim_config("quick").with_overrides(
        **{"pupil.npix": npix, "detector.photons": 1e7, "detector.read_noise_e": 1.0}
    )
    model = FrameModel(cfg)
    basis = zernike_basis(list(range(2, 37)), npix)
    c = np.random.default_rng(0).normal(size=(2, 35)) * 15  # ~90 nm RMS
    return model, basis, np.einsum("bj,jhw->bhw", c, basis)


def test_pixel_fisher_is_the_dense_product_and_blind_to_piston() -> None:
    # The low-rank form against J^T W J from the engine's own J v for every one-pixel
    # tangent (float64: 1e-15 relative measured); F u = 0 for the piston u, to the same
    # round-off relative to F's scale (a ZWFS does not see a piston).
    model, _, opd = _setup(16)
    lin = model.linearise(model.tensor(opd))
    inv_var = model.noise().variance(lin.intensity).reciprocal()
    pixels = torch.nonzero(torch.as_tensor(model.lit).flatten()).flatten()
    onehot = torch.zeros(len(pixels), 16 * 16, dtype=torch.float64)
    onehot[torch.arange(len(pixels)), pixels] = 1.0
    jac = model.jvp(lin, onehot.reshape(-1, 16, 16)).flatten(2)  # (B, K, L N^2)
    dense = (jac * inv_var.flatten(1)[:, None]) @ jac.transpose(1, 2)
    fast = model.tangent_map(lin).pixel_fisher(inv_var, pixels)
    scale = float(dense.abs().max())
    assert float((fast - dense).abs().max()) < 1e-12 * scale
    piston = torch.ones(len(pixels), dtype=torch.float64)
    assert float((fast @ piston).abs().max()) < 1e-9 * scale * len(pixels) ** 0.5


def test_zonal_bound_lies_above_the_modal_one() -> None:
    # Nested models: every Noll 2-36 map is a pixel map, so the pixels' bound on the same
    # OPD error cannot be lower than the modes' (0.2 against ~1-3 nm at 64 px, 1e7 photons).
    # At 16 px both are finite and the pixel one is at least the modal one.
    model, basis, opd = _setup(16)
    modal = crb_rms_nm(model, opd, model.tensor(basis), model.noise())
    zonal = zonal_crb_rms_nm(model, opd, model.noise())
    assert np.isfinite(zonal).all() and (zonal >= modal).all(), (zonal, modal)
    assert (zonal < 100 * modal).all()  # and not absurdly far (a unit or scale slip)


def test_zonal_bound_is_the_dense_pseudo_inverse_over_the_pupil() -> None:
    # The bound from the dense Fisher matrix: pinv(J^T W J) over the lit pixels (the
    # piston is its null space), restricted to the pupil mask, the mask's mean removed:
    # RMS = sqrt(tr(P C P) / m), P = I - 1 1^T / m. The Cholesky of F + s u u^T with the
    # piston u must give the same to round-off (1e-6 relative asked).
    model, _, opd = _setup(16)
    noise = model.noise()
    lit = torch.as_tensor(model.lit).flatten()
    pixels = torch.nonzero(lit).flatten()
    inside = torch.as_tensor(model.mask).flatten()[pixels]
    expected = []
    for one in opd:
        lin = model.linearise(model.tensor(one[None]))
        inv_var = noise.variance(lin.intensity).reciprocal()
        onehot = torch.zeros(len(pixels), 16 * 16, dtype=torch.float64)
        onehot[torch.arange(len(pixels)), pixels] = 1.0
        jac = model.jvp(lin, onehot.reshape(-1, 16, 16)).flatten(2)[0]  # (K, L N^2)
        cov = torch.linalg.pinv((jac * inv_var.flatten()) @ jac.T, hermitian=True)
        c = cov[inside][:, inside]
        m = c.shape[0]
        centre = torch.eye(m, dtype=torch.float64) - 1.0 / m
        expected.append(float(torch.trace(centre @ c @ centre) / m) ** 0.5)
    got = zonal_crb_rms_nm(model, opd, noise)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
