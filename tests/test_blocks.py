"""Every registered block: shapes, finite outputs, gradients; block-specific properties."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from recon.nn import (
    UnknownNameError,
    create_act,
    create_block,
    create_norm,
    list_blocks,
    reparameterize_model,
)
from recon.nn.blocks import EdgeViTBlock, PartialResidualBlock, RepConv
from recon.nn.layers import ConvNormAct
from recon.nn.registry import Registry

ALL_BLOCKS = list_blocks()


def test_registry_holds_the_library() -> None:
    expected = {
        "residual", "double_conv", "dwsep", "shuffle", "asymmetric", "bottleneck", "dilated",
        "csp", "elan", "e_elan", "repconv", "edgevit", "poolformer", "prn",
    }  # fmt: skip
    assert expected <= set(ALL_BLOCKS)


@pytest.mark.parametrize("name", ALL_BLOCKS)
@pytest.mark.parametrize(("in_ch", "out_ch", "stride"), [(8, 16, 1), (16, 16, 1), (8, 16, 2)])
def test_block_shape_finite_and_gradients(name: str, in_ch: int, out_ch: int, stride: int) -> None:
    torch.manual_seed(0)
    block = create_block(name, in_ch, out_ch, stride=stride)
    x = torch.randn(2, in_ch, 16, 12)
    y = block(x)
    assert y.shape == (2, out_ch, 16 // stride, 12 // stride)
    assert torch.isfinite(y).all()
    # A random projection, so no gradient cancels by symmetry (a plain sum would under BN).
    (y * torch.randn_like(y)).sum().backward()
    for pname, p in block.named_parameters():
        assert p.grad is not None, f"{name}: {pname} got no gradient"
        assert p.grad.abs().sum() > 0, f"{name}: {pname} got a zero gradient"


@pytest.mark.parametrize("name", ALL_BLOCKS)
def test_block_odd_size_keeps_shape(name: str) -> None:
    block = create_block(name, 8, 8).eval()
    assert block(torch.randn(1, 8, 9, 7)).shape == (1, 8, 9, 7)


def test_unknown_block_message_lists_known_names() -> None:
    with pytest.raises(KeyError) as info:
        create_block("no_such_block", 8, 8)
    message = str(info.value)
    assert "\n" not in message and "no_such_block" in message and "residual" in message
    assert isinstance(info.value, ValueError)  # UnknownNameError is both


def test_registry_rejects_a_second_object_under_a_taken_name() -> None:
    reg: Registry = Registry("thing")

    @reg.register("a")
    class A:
        pass

    with pytest.raises(ValueError, match="already registered"):

        @reg.register("a")
        class B:
            pass

    assert reg.get("A") is A and "a" in reg and len(reg) == 1
    with pytest.raises(UnknownNameError, match="known: a"):
        reg.get("b")


@pytest.mark.parametrize("name", ["relu", "gelu", "silu", "leaky_relu", "mish", "identity"])
def test_create_act(name: str) -> None:
    x = torch.linspace(-2, 2, 9)
    y = create_act(name)(x)
    assert y.shape == x.shape
    assert torch.allclose(y[x > 0.5], x[x > 0.5], atol=0.4)  # all are ~identity for large x


@pytest.mark.parametrize("name", ["batch", "group", "instance", "layer", "none"])
def test_create_norm(name: str) -> None:
    torch.manual_seed(0)
    x = 3.0 + 2.0 * torch.randn(4, 12, 5, 5)
    y = create_norm(name, 12)(x)
    assert y.shape == x.shape
    if name == "none":
        assert torch.equal(y, x)
    else:  # every norm removes the offset of 3 somewhere
        assert y.mean().abs() < 0.1


def test_layer_norm_normalises_each_pixel_over_channels() -> None:
    y = create_norm("layer", 6)(torch.randn(2, 6, 3, 4) * 5 + 1)
    assert torch.allclose(y.mean(1), torch.zeros(2, 3, 4), atol=1e-5)
    assert torch.allclose(y.var(1, unbiased=False), torch.ones(2, 3, 4), atol=1e-3)


def test_factories_reject_unknown_names() -> None:
    with pytest.raises(ValueError, match="known: relu"):
        create_act("sigmoidish")
    with pytest.raises(ValueError, match="known: batch"):
        create_norm("weight", 4)


def test_conv_norm_act_has_bias_only_without_norm() -> None:
    assert ConvNormAct(4, 8, norm="batch")[0].bias is None
    assert ConvNormAct(4, 8, norm="none")[0].bias is not None


def _randomise_bn(model: nn.Module, gen: torch.Generator) -> None:
    """Non-trivial BatchNorm running statistics and affine parameters."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=gen, dtype=m.running_mean.dtype))
            m.running_var.copy_(torch.rand(c, generator=gen, dtype=m.running_var.dtype) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.randn(c, generator=gen, dtype=m.weight.dtype))
                m.bias.copy_(torch.randn(c, generator=gen, dtype=m.bias.dtype))


@pytest.mark.parametrize(
    ("in_ch", "out_ch", "stride", "groups"),
    [(8, 8, 1, 1), (8, 16, 1, 1), (8, 8, 2, 1), (8, 8, 1, 4)],
)
def test_repconv_reparameterize_matches_training_form(
    in_ch: int, out_ch: int, stride: int, groups: int
) -> None:
    gen = torch.Generator().manual_seed(1)
    block = RepConv(in_ch, out_ch, stride=stride, groups=groups).double().eval()
    _randomise_bn(block, gen)
    assert (block.identity is not None) == (in_ch == out_ch and stride == 1)
    x = torch.randn(2, in_ch, 11, 10, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        reference = block(x)
        reparameterize_model(block)
        fused = block(x)
    assert block.is_fused and block.conv3 is None
    assert sum(isinstance(m, nn.Conv2d) for m in block.modules()) == 1
    assert reference.abs().max() > 0.1  # not a trivially zero output
    torch.testing.assert_close(fused, reference, atol=1e-5, rtol=0)


def test_repconv_float32_fusion_within_1e5() -> None:
    gen = torch.Generator().manual_seed(2)
    block = RepConv(16, 16).eval()
    _randomise_bn(block, gen)
    x = torch.randn(1, 16, 8, 8, generator=gen)
    with torch.no_grad():
        reference = block(x)
        block.reparameterize()
        torch.testing.assert_close(block(x), reference, atol=1e-5, rtol=1e-5)


def test_repconv_rejects_non_batch_norm() -> None:
    with pytest.raises(ValueError, match="BatchNorm"):
        RepConv(8, 8, norm="group")


@pytest.mark.parametrize(("in_ch", "out_ch", "ratio"), [(8, 8, 0.5), (8, 16, 0.5), (16, 8, 1.0)])
def test_prn_adds_identity_to_chosen_channels_only(in_ch: int, out_ch: int, ratio: float) -> None:
    torch.manual_seed(0)
    block = PartialResidualBlock(in_ch, out_ch, partial_ratio=ratio).eval()
    n = round(ratio * min(in_ch, out_ch))
    assert block.n_identity == n
    x = torch.randn(2, in_ch, 6, 6)
    with torch.no_grad():
        difference = block(x) - block.body(x)
    torch.testing.assert_close(difference[:, :n], x[:, :n])
    assert torch.equal(difference[:, n:], torch.zeros_like(difference[:, n:]))


def _far_window_change(block: nn.Module) -> float:
    """Largest output change in the bottom-right 4x4 window when the top-left one changes."""
    torch.manual_seed(0)
    x = torch.randn(1, 8, 32, 32)
    x2 = x.clone()
    x2[..., :4, :4] += 5.0 * torch.randn(1, 8, 4, 4)
    with torch.no_grad():
        change = block(x2) - block(x)
    return change[..., -4:, -4:].abs().max().item()


def test_edgevit_global_attention_mixes_windows() -> None:
    torch.manual_seed(0)
    block = EdgeViTBlock(8, 8, window=4).eval()  # 8 x 8 delegate tokens
    assert _far_window_change(block) > 1e-4
    # Without the attention branch's output the far window is untouched: the mixing is global
    # attention's, not a side effect of the local convs.
    with torch.no_grad():
        block.global_attn.proj.weight.zero_()
        block.global_attn.proj.bias.zero_()
    assert _far_window_change(block) == 0.0
    # Control: a conv block's receptive field (5 px) does not reach the far window.
    assert _far_window_change(create_block("residual", 8, 8).eval()) == 0.0
