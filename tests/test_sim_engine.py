"""The batched ZWFS engine against POPPY, a converged reference and the analytic model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sim.analytic import ndiaye_intensity, opd_to_phase
from sim.babinet import DotGrid, MatrixBabinet
from sim.poppy_ref import PoppyZWFS
from sim.zernike import zernike_basis
from sim.zwfs import LOW_RANK_RTOL, ZWFSModel
from tests.sim_helpers import paper, random_opd

RMS_NM = [0.0, 50.0, 200.0, 500.0]


@pytest.fixture(scope="module")
def hard_edge_pair() -> tuple[ZWFSModel, PoppyZWFS, torch.Tensor]:
    cfg = paper(**{"focal.antialias": False})
    model = ZWFSModel(cfg)
    return model, PoppyZWFS(cfg), random_opd(model, RMS_NM, seed=3)


@pytest.mark.parametrize("wavelength_index", range(4))
def test_engine_matches_poppy_hard_edge(hard_edge_pair, wavelength_index: int) -> None:
    """Same sampling and hard dot edge: complex64 engine within 1e-5 of POPPY's peak."""
    model, ref, opd = hard_edge_pair
    with torch.inference_mode():
        intensity = model(opd)[:, wavelength_index].double().numpy()
    wavelength = model.wavelengths_um[wavelength_index]
    for i, rms in enumerate(RMS_NM):
        expected = ref.intensity(opd[i].double().numpy(), wavelength)
        err = np.abs(intensity[i] - expected).max() / expected.max()
        assert err < 1e-5, f"{rms} nm at {wavelength} um: {err:.2e}"


@pytest.mark.device
def test_engine_matches_poppy_antialiased_complex128(device: str) -> None:
    """The anti-aliased dot is the same element in both models: agreement to rounding,
    on the test device (POPPY on the CPU)."""
    cfg = paper(precision="complex128")
    model, ref = ZWFSModel(cfg, device=device), PoppyZWFS(cfg)
    opd = random_opd(model, [120.0], seed=5)
    intensity = model(opd)[0, 2].cpu().numpy()
    expected = ref.intensity(opd[0].cpu().numpy(), 1.0)
    assert np.abs(intensity - expected).max() / expected.max() < 1e-12


def test_default_sampling_close_to_converged_reference() -> None:
    """q = 32 samples per lambda0/D with a grey dot edge is within 1e-3 of a converged answer.

    The reference (q = 256, exact edge areas) differs from q = 512 by 9e-6 of the peak,
    so it stands for the converged result at this tolerance; q = 32 is 6.4e-4 from q =
    512 (16 x 16 sub-sampled edge areas: 6.9e-4).
    """
    default = ZWFSModel(paper())
    reference = ZWFSModel(paper(precision="complex128", **{"focal.samples_per_lambda0_d": 256}))
    opd = random_opd(reference, RMS_NM, seed=1)
    with torch.inference_mode():
        got, want = default(opd).double(), reference(opd)
    err = (got - want).abs().amax(dim=(-2, -1)) / want.amax(dim=(-2, -1))
    assert err.max() < 1e-3, err


def test_zero_mask_phase_returns_input() -> None:
    """theta = 0: the dot does nothing and the detector sees the clear pupil."""
    model = ZWFSModel(paper(precision="complex128", **{"mask.opd_depth_nm": 0.0}))
    opd = random_opd(model, [300.0, 20.0])
    expected = (model.pupil**2 / model.clear_mean).expand(2, 4, -1, -1)
    torch.testing.assert_close(model(opd), expected, rtol=0, atol=1e-12)


def test_real_arithmetic_operator_equals_complex_matrices() -> None:
    """The parity-folded real MFT equals the plain complex MFT (any field, not only pupils)."""
    model = ZWFSModel(paper(precision="complex128", **{"pupil.npix": 32}))
    op = model.dot_operator
    rng = np.random.default_rng(0)
    maps = torch.as_tensor(rng.normal(size=(3, 4, 2, 32, 32)))
    x = (np.arange(32) - 15.5) / 32
    u = (np.arange(36) - 17.5) / 32
    ratio = 1.0 / np.array(model.wavelengths_um)
    from sim.mask import dot_footprint

    weights = (ratio / (32 * 32))[:, None, None] ** 2 * dot_footprint(u, 1.06, True)
    plain = MatrixBabinet(DotGrid(x, u, ratio, weights), torch.float64)
    torch.testing.assert_close(op(maps), plain(maps), rtol=0, atol=1e-12)
    torch.testing.assert_close(
        op(maps, model.dot_mix), plain(maps, model.dot_mix), rtol=0, atol=1e-12
    )


@pytest.mark.parametrize("rtol", [1e-7, 1e-12])
def test_low_rank_operator_matches_the_separable_one(rtol: float) -> None:
    """T on pupil-supported maps (and T's lit output for any map) from its r SVD terms.

    The truncation's relative error in operator norm is the first dropped singular value
    over the largest, below rtol; on random maps the max-pixel error stays within 10 rtol
    (a loose factor for max-norm against operator norm). A pupil field reaches the dot
    through a handful of terms: r well below the 2M' = 36 focal rows per axis at 1e-7.
    """
    model = ZWFSModel(paper(precision="complex128", **{"pupil.npix": 32}))
    op, lit = model.dot_operator, model.pupil > 0
    out, inp = op.low_rank(lit, rtol)
    assert out.shape[1] < (20 if rtol > 1e-9 else 44)
    assert float(inp[:, :, ~lit].abs().max()) == 0.0
    rng = np.random.default_rng(1)
    x = torch.as_tensor(rng.normal(size=(3, 4, 1, 32, 32))) * lit
    low = torch.einsum("lrij,blr->blij", out, torch.einsum("lrij,blij->blr", inp, x[:, :, 0]))
    exact = op(x)[:, :, 0]
    assert float((low - exact).abs().max()) < 10 * rtol * float(exact.abs().max())
    y = torch.as_tensor(rng.normal(size=(3, 4, 1, 32, 32)))  # any map, lit output
    low = torch.einsum("lrij,blr->blij", inp, torch.einsum("lrij,blij->blr", out, y[:, :, 0]))
    exact = op(y)[:, :, 0] * lit
    assert float((low - exact).abs().max()) < 10 * rtol * float(exact.abs().max())


def test_positive_opd_bump_raises_intensity() -> None:
    """Sign convention: a small positive OPD bump brightens the ZWFS frame there (theta = pi/2)."""
    model = ZWFSModel(paper(precision="complex128"))
    coords = torch.arange(128, dtype=torch.float64) - 63.5
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    bump = 5.0 * torch.exp(-((xx - 20) ** 2 + (yy + 10) ** 2) / (2 * 3.0**2))  # +5 nm peak
    flat, bumped = model(torch.zeros(1, 128, 128)), model(bump[None])
    delta = (bumped - flat)[0]
    iy, ix = 63 - 10 + 1, 63 + 20 + 1  # pixel nearest the bump centre (x = +20, y = -10 px)
    assert (delta[:, iy, ix] > 0).all()
    assert (delta[:, iy, ix] > 10 * delta[:, 30, 30].abs()).all()  # local, not global


def test_small_phase_response_matches_ndiaye_model() -> None:
    """Linear response to a mid-order mode (Noll 11) against N'Diaye et al. (2013).

    The symmetric difference (I(+a) - I(-a)) / 2 removes the second-order terms; the
    third-order ones are phi^2 / 6 ~ 3e-5 relative at 2 nm RMS and 1 um. What is
    left is what the model neglects: the mode's own light through the dot,
    T(P phi), which changes b. To first order it adds
    -2 Re[conj(E0) (1 - e^{i theta}) i T(P phi)] to the response, E0 = P - (1 - e^{i theta}) b,
    so the deviation is bounded by 2 |1 - e^{i theta}| max|E0| max|T(P phi)|. T is
    evaluated with the plain complex MFT (MatrixBabinet), not the engine's operator.
    """
    cfg = paper(precision="complex128", wavelengths_um=[1.0])
    model = ZWFSModel(cfg)
    mode = torch.as_tensor(zernike_basis([11], 128, 6.0)[0])
    amp_nm = 2.0
    plus, minus = model(amp_nm * mode[None])[0, 0], model(-amp_nm * mode[None])[0, 0]
    response = (plus - minus) / 2
    b, pupil, theta = model.reference_wave()[0], model.amplitude, torch.pi / 2
    phi = opd_to_phase(amp_nm * mode, 1000.0)
    model_response = (
        ndiaye_intensity(phi, pupil, b, theta) - ndiaye_intensity(-phi, pupil, b, theta)
    ) / 2
    inside = model.mask
    deviation = (response - model_response)[inside].abs().max()

    x = (np.arange(128) - 63.5) / 128
    u = (np.arange(cfg.focal_box_samples) - (cfg.focal_box_samples - 1) / 2) / 32
    from sim.mask import dot_footprint

    weights = (1 / (128 * 32)) ** 2 * dot_footprint(u, 1.06, True)[None]
    leak = MatrixBabinet(DotGrid(x, u, np.array([1.0]), weights), torch.float64)(
        (pupil * phi)[None, None, None]
    )[0, 0, 0]
    c = abs(1 - np.exp(1j * theta))
    e0 = (pupil - (1 - torch.exp(torch.tensor(1j * theta))) * b).abs()
    bound = 2 * c * e0[inside].max() * leak[inside].abs().max()
    third_order = model_response[inside].abs().max() * phi[inside].abs().max() ** 2 / 6
    assert deviation <= bound + third_order, (deviation, bound)
    assert deviation < 2e-3 * model_response[inside].abs().max()  # the model holds to 0.2 %


def test_engine_is_differentiable() -> None:
    """Gradients flow from intensities to the OPD (gradcheck on a small system)."""
    model = ZWFSModel(
        paper(precision="complex128", wavelengths_um=[1.0, 1.2], **{"pupil.npix": 16})
    )
    opd = (50 * torch.randn(1, 16, 16, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda o: model(o).sum(dim=(-1, -2)), (opd,), atol=1e-6)


@pytest.mark.device
def test_inference_path_equals_autograd_path(device: str) -> None:
    """The in-place inference branch computes the same intensities as the autograd one."""
    model = ZWFSModel(paper(**{"pupil.npix": 32}), device=device)
    opd = 200 * torch.randn(2, 32, 32, device=device)
    with torch.inference_mode():
        fast = model(opd)
    slow = model(opd.clone().requires_grad_())
    torch.testing.assert_close(fast, slow.detach(), rtol=0, atol=1e-6)


def test_binning_keeps_normalisation() -> None:
    """2 x 2 binning: the clear reference is still 1 on average inside the binned pupil."""
    model = ZWFSModel(paper(**{"detector.binning": 2}))
    clear = model.reference_clear()
    assert clear.shape == (4, 64, 64)
    assert torch.allclose(clear[:, model.detector_mask].mean(dim=1), torch.ones(4), atol=1e-6)


def test_gram_low_rank_equals_the_svd_one() -> None:
    """`low_rank_gram` (parity-blocked Gram matrices) keeps the same terms as the SVD
    `low_rank` at the float32 engine's truncation, to ~sqrt(eps64) of the largest."""
    model = ZWFSModel(paper(precision="complex128", **{"pupil.npix": 32}), dot="exact")
    op, lit = model.dot_operator, model.pupil > 0
    out, inp = op.low_rank(lit, LOW_RANK_RTOL)
    out_g, inp_g = op.low_rank_gram(lit, LOW_RANK_RTOL)
    assert out_g.shape == out.shape
    assert float(inp_g[:, :, ~lit].abs().max()) == 0.0
    full = torch.einsum("lrij,lrxy->lijxy", out, inp)  # the truncated operators themselves
    full_g = torch.einsum("lrij,lrxy->lijxy", out_g, inp_g)
    scale = float(full.abs().max())
    assert float((full - full_g).abs().max()) < 1e-7 * scale


def _dropped_singular_value(model: ZWFSModel) -> torch.Tensor:
    """sigma_{r+1} (L,): the first singular value the engine's low-rank dot drops, from
    the SVD of T on the lit pupil at 1e-12."""
    out, _ = model.dot_operator.low_rank(model.pupil > 0, 1e-12)
    sig = out.flatten(2).norm(dim=-1)  # (L, r'): the terms are sigma x a unit map
    r = model.low_rank_terms()[0].shape[1]
    return sig[:, r]


def test_low_rank_dot_error_within_its_dropped_singular_values() -> None:
    """In float64 the low-rank dot's only error is the truncation: on pupil fields,
    |T E - T_r E|_2 <= sigma_{r+1} |E|_2 per wavelength (sigma_{r+1} the first singular
    value dropped, below 1e-7 of the largest), and the intensities differ by at most
    2 max|E_out| d + d^2, d = |mix|_2 sigma_{r+1} |E|_2 the field's error bound."""
    cfg = paper(precision="complex128", **{"pupil.npix": 32})
    low, exact = ZWFSModel(cfg, dot="low_rank"), ZWFSModel(cfg, dot="exact")
    sigma_drop = _dropped_singular_value(exact)
    out, inp_t = low.low_rank_terms()
    sig_kept = out.norm(dim=-1)
    assert torch.all(sigma_drop < LOW_RANK_RTOL * sig_kept[:, 0])
    assert torch.all(sig_kept[:, :15].amin(dim=1) > LOW_RANK_RTOL * sig_kept[:, 0])
    opd = random_opd(exact, [50.0, 200.0, 500.0], seed=7)
    with torch.no_grad():
        e_in = exact.input_field(opd)  # (B, L, 2, N, N)
        t_exact = exact.dot_operator(e_in)
        flat = e_in.flatten(-2)
        t_low = torch.einsum("lrp,blcr->blcp", out, torch.einsum("blcp,lpr->blcr", flat, inp_t))
        err = (t_exact.flatten(-2) - t_low).square().sum(dim=(-1, -2)).sqrt()  # (B, L)
        norm_e = flat.square().sum(dim=(-1, -2)).sqrt()
        assert torch.all(err <= 1.001 * sigma_drop * norm_e + 1e-14), (err, sigma_drop * norm_e)
        got, want = low(opd), exact(opd)
        e_out = exact.field_parts(opd)
    mix_norm = torch.linalg.matrix_norm(exact.dot_mix, ord=2)  # (L,)
    d = (mix_norm * sigma_drop)[None] * norm_e  # (B, L)
    e_max = (e_out[:, :, 0].square() + e_out[:, :, 1].square()).sqrt().amax(dim=(-1, -2))
    bound = 2 * e_max * d + d**2
    assert torch.all((got - want).abs().amax(dim=(-1, -2)) <= bound), bound


@pytest.mark.parametrize("name", ["quick", "paper"])
def test_low_rank_engine_is_exact_to_float32_rounding(name: str) -> None:
    """The float32 default (low-rank dot) errs against the float64 separable MFT no more
    than the float32 separable MFT does (both ~4e-7 of the peak: rounding)."""
    cfg = paper(**({"pupil.npix": 64} if name == "quick" else {}))
    low, exact = ZWFSModel(cfg), ZWFSModel(cfg, dot="exact")
    assert low.dot == "low_rank" and exact.dot == "exact"
    ref = ZWFSModel(cfg.with_overrides(precision="complex128"))
    assert ref.dot == "exact"
    opd = random_opd(ref, RMS_NM, seed=2)
    with torch.inference_mode():
        want = ref(opd)
        peak = want.amax(dim=(-2, -1))
        err_low = ((low(opd.float()).double() - want).abs().amax(dim=(-2, -1)) / peak).max()
        err_exact = ((exact(opd.float()).double() - want).abs().amax(dim=(-2, -1)) / peak).max()
    assert err_exact < 1e-6
    assert err_low < 2 * err_exact, (float(err_low), float(err_exact))
