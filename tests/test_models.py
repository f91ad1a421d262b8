"""Every registered model: shape, finite output, a gradient for every parameter; the GRU
stepped frame by frame equals its unrolled forward; the normalising wrapper."""

from __future__ import annotations

import pytest
import torch

import recon.models  # noqa: F401  (registers phenn and gru)
from recon.models import NormStats, ReconModel, WavelengthGRUNet, build_model
from recon.nn import create_model, list_models

N_WL, NPIX, BATCH = 4, 32, 2  # 32 px: a multiple of 8, the deepest default U-Net's need
NOT_DENSE = {"encoder", "classifier"}  # feature maps, logits: tests/test_heads.py
DENSE = [m for m in list_models() if m not in NOT_DENSE]


def _assert_all_parameters_have_gradients(model: torch.nn.Module) -> None:
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert p.grad.abs().sum() > 0, f"{name} got a zero gradient"


@pytest.mark.parametrize("name", DENSE)
def test_every_registered_dense_model(name: str) -> None:
    """Every model that maps an image to an image (B, out_ch, H, W)."""
    torch.manual_seed(0)
    model = create_model(name, in_ch=N_WL, out_ch=1)
    x = torch.randn(BATCH, N_WL, NPIX, NPIX)
    y = model(x)
    if isinstance(y, tuple):  # deep supervision returns (out, aux) in training mode
        y = y[0]
    assert y.shape == (BATCH, 1, NPIX, NPIX)
    assert torch.isfinite(y).all()
    (y * torch.randn_like(y)).sum().backward()
    _assert_all_parameters_have_gradients(model)


def test_phenn_and_gru_are_registered() -> None:
    assert {"phenn", "gru"} <= set(list_models())


def test_bidirectional_gru_gradients() -> None:
    torch.manual_seed(0)
    model = create_model("gru", in_ch=3, widths=(8, 16), bidirectional=True, separable=False)
    y = model(torch.randn(2, 3, 16, 16))
    assert y.shape == (2, 1, 16, 16)
    (y * torch.randn_like(y)).sum().backward()
    _assert_all_parameters_have_gradients(model)
    with pytest.raises(ValueError, match="unidirectional"):
        model.step(torch.randn(2, 1, 16, 16))


@pytest.mark.parametrize("recurrent_scales", [None, 1, 2])
@pytest.mark.parametrize("cell", ["fused", "classic"])
@pytest.mark.parametrize("separable", [True, False])
def test_gru_stepped_equals_unrolled(
    separable: bool, cell: str, recurrent_scales: int | None
) -> None:
    """The unrolled forward (every frame through the shared encoder in one batch, the
    gates' input terms of every wavelength in one convolution) is the per-wavelength loop."""
    torch.manual_seed(0)
    model = WavelengthGRUNet(
        in_ch=N_WL, widths=(8, 16, 32), separable=separable, cell=cell,
        recurrent_scales=recurrent_scales,
    ).eval()  # fmt: skip
    # BatchNorm statistics that are not the identity, so the test sees the encoder's norms
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(BATCH, N_WL, NPIX, NPIX)
    with torch.no_grad():
        unrolled = model(x)
        state = None
        for t in range(N_WL):
            state = model.step(x[:, t : t + 1], state)  # one wavelength frame at a time
        stepped = model.decode(state, x)
        # the order of the wavelengths matters: the recurrence is not a symmetric pooling
        order = [2, 0, 3, 1]
        state = None
        for t in order:
            state = model.step(x[:, t], state)
        reordered = model.decode(state, x)
    torch.testing.assert_close(stepped, unrolled, rtol=1e-5, atol=1e-4)
    assert (reordered - unrolled).abs().max() > 1e-3
    assert len(state) == (3 if recurrent_scales is None else recurrent_scales)


def test_gru_gradient_flows_through_the_recurrence() -> None:
    """The final hidden state depends on the first frame only through the recurrence
    (h carried from step to step): its gradient there is not zero, and the cell's state
    weights get one."""
    torch.manual_seed(0)
    model = WavelengthGRUNet(in_ch=N_WL, widths=(8, 16, 32), recurrent_scales=1)
    x = torch.randn(BATCH, N_WL, NPIX, NPIX, requires_grad=True)
    state = None
    for t in range(N_WL):
        state = model.step(x[:, t], state)
    state[-1].square().sum().backward()
    assert x.grad is not None
    assert x.grad[:, 0].abs().sum() > 0  # the first frame reaches the last state
    assert all(p.grad is not None and p.grad.abs().sum() > 0
               for p in model.cells[-1].h_gates.parameters())  # fmt: skip


def test_gru_stacked_scales_need_every_frame() -> None:
    model = WavelengthGRUNet(in_ch=N_WL, widths=(8, 16, 32), recurrent_scales=1).eval()
    x = torch.randn(BATCH, N_WL, NPIX, NPIX)
    with torch.no_grad():
        state = model.step(x[:, 0])
    with pytest.raises(ValueError, match="needs the 4 wavelength frames"):
        model.decode(state)
    with pytest.raises(ValueError, match="recurrent_scales must be 1 to"):
        WavelengthGRUNet(widths=(8, 16, 32), recurrent_scales=4)


def test_opd_scale_sets_output_units() -> None:
    torch.manual_seed(0)
    x = torch.randn(1, 2, 16, 16)
    small = create_model("phenn", in_ch=2, widths=(8, 16), opd_scale_nm=1.0).eval()
    big = create_model("phenn", in_ch=2, widths=(8, 16), opd_scale_nm=250.0).eval()
    big.load_state_dict({**small.state_dict(), "opd_scale_nm": torch.tensor(250.0)})
    with torch.no_grad():
        torch.testing.assert_close(big(x), 250.0 * small(x))


@pytest.mark.parametrize("arch", ["phenn", "gru", "unet"])
def test_recon_model_normalises_and_scales(arch: str) -> None:
    torch.manual_seed(0)
    stats = NormStats((1.0, 2.0), (0.5, 0.25), opd_scale_nm=123.0, n_samples=1)
    model = build_model(arch, {"widths": [8, 16]}, 2, stats).eval()
    assert isinstance(model, ReconModel)
    assert model.opd_scale_nm == pytest.approx(123.0)
    raw = torch.rand(3, 2, 16, 16)
    with torch.no_grad():
        direct = model.net(
            (raw - torch.tensor([1.0, 2.0]).view(1, 2, 1, 1))
            / torch.tensor([0.5, 0.25]).view(1, 2, 1, 1)
        )
        expected = direct * (1.0 if arch != "unet" else 123.0)
        torch.testing.assert_close(model(raw), expected)
    with pytest.raises(ValueError, match="expected intensities"):
        model(torch.rand(1, 3, 16, 16))


def test_fused_cell_is_a_gru() -> None:
    """The fused cell is the 'reset after' GRU: with 1x1 kernels and no separable split it
    is `nn.GRUCell` applied at every pixel, given the same weights (nn.GRU's update gate
    keeps the old state, h' = (1 - z) n + z h: its z weights are ours negated)."""
    from recon.models.gru import FusedConvGRUCell

    torch.manual_seed(0)
    cell = FusedConvGRUCell(3, 5, kernel_size=1, separable=False)
    ref = torch.nn.GRUCell(3, 5)
    with torch.no_grad():  # nn.GRU orders the gates r, z, n; the fused cell z, r, n
        order = torch.cat([torch.arange(5, 10), torch.arange(0, 5), torch.arange(10, 15)])
        sign = torch.ones(15)
        sign[5:10] = -1.0  # z (rows 5-10 in nn.GRU's order) negated
        ref.weight_ih.copy_(cell.x_gates.weight[order, :, 0, 0] * sign[:, None])
        ref.bias_ih.copy_(cell.x_gates.bias[order] * sign)
        ref.weight_hh.copy_(cell.h_gates.weight[order, :, 0, 0] * sign[:, None])
        ref.bias_hh.copy_(cell.h_gates.bias[order] * sign)
    x, h = torch.randn(2, 3, 4, 4), torch.randn(2, 5, 4, 4)
    got = cell(cell.project(x), h)
    pixels = lambda t: t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])  # noqa: E731
    torch.testing.assert_close(pixels(got), ref(pixels(x), pixels(h)))
