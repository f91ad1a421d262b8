"""U-Net from every registered block; deep supervision; encoder/decoder reuse; size checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from recon.nn import (
    RepConv,
    UNet,
    UNetDecoder,
    UNetEncoder,
    create_model,
    deep_supervision_loss,
    list_blocks,
    list_models,
    reparameterize_model,
)

WIDTHS = (8, 16, 32)  # three levels: H, W multiples of 4


def _assert_all_parameters_have_gradients(model: torch.nn.Module) -> None:
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert p.grad.abs().sum() > 0, f"{name} got a zero gradient"


@pytest.mark.parametrize("block", list_blocks())
def test_unet_with_every_block(block: str) -> None:
    torch.manual_seed(0)
    model = UNet(3, 2, widths=WIDTHS, block=block)
    x = torch.randn(2, 3, 16, 12)
    y = model(x)
    assert y.shape == (2, 2, 16, 12)
    assert torch.isfinite(y).all()
    (y * torch.randn_like(y)).sum().backward()
    _assert_all_parameters_have_gradients(model)


@pytest.mark.parametrize(
    ("down", "up", "bottleneck", "per_stage"),
    [("maxpool", "bilinear", "edgevit", 2), ("conv", "transpose", "poolformer", 1)],
)
def test_unet_options(down: str, up: str, bottleneck: str, per_stage: int) -> None:
    torch.manual_seed(0)
    model = UNet(
        1, 1, widths=WIDTHS, down=down, up=up, bottleneck=bottleneck, blocks_per_stage=per_stage
    )
    y = model(torch.randn(2, 1, 8, 16))
    assert y.shape == (2, 1, 8, 16)
    (y * torch.randn_like(y)).sum().backward()
    _assert_all_parameters_have_gradients(model)
    assert type(model.bottleneck).__name__.lower().startswith(bottleneck)


def test_deep_supervision_train_and_eval() -> None:
    torch.manual_seed(0)
    model = UNet(2, 1, widths=(8, 16, 32, 64), deep_supervision=True)
    x = torch.randn(2, 2, 16, 16)
    out, aux = model.train()(x)
    assert out.shape == (2, 1, 16, 16)
    # deepest feature and every decoder stage but the last, coarsest first
    assert [a.shape[-1] for a in aux] == [2, 4, 8]
    assert all(a.shape[:2] == (2, 1) for a in aux)
    target = torch.randn(2, 16, 16)  # (B, H, W) OPD map
    loss = F.mse_loss(out, target[:, None]) + deep_supervision_loss(aux, target, F.mse_loss)
    loss.backward()
    _assert_all_parameters_have_gradients(model)  # the aux heads too
    evaluated = model.eval()(x)
    assert isinstance(evaluated, torch.Tensor) and evaluated.shape == (2, 1, 16, 16)


def test_deep_supervision_loss_uses_area_downsampled_target() -> None:
    target = torch.arange(16.0).reshape(1, 1, 4, 4)
    coarse = torch.tensor([[[[2.5, 4.5], [10.5, 12.5]]]])  # 2x2 block means
    seen: list[torch.Tensor] = []

    def loss_fn(pred: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        seen.append(tgt)
        return (pred - tgt).abs().mean()

    loss = deep_supervision_loss(
        [coarse.clone(), torch.zeros(1, 1, 4, 4)], target, loss_fn, [2.0, 0.5]
    )
    torch.testing.assert_close(seen[0], coarse)
    torch.testing.assert_close(seen[1], target)
    torch.testing.assert_close(loss, torch.tensor(0.5 * 7.5))
    with pytest.raises(ValueError, match="weights"):
        deep_supervision_loss([coarse], target, loss_fn, [1.0, 1.0])


@pytest.mark.parametrize(("h", "w"), [(10, 16), (16, 18), (7, 7)])
def test_bad_size_raises_value_error(h: int, w: int) -> None:
    model = UNet(1, 1, widths=(8, 16, 32, 64))  # needs multiples of 8
    with pytest.raises(ValueError, match="divisible by 8"):
        model(torch.randn(1, 1, h, w))


def test_encoder_decoder_reuse() -> None:
    torch.manual_seed(0)
    encoder = UNetEncoder(1, (8, 16, 32), block="dwsep")
    decoder = UNetDecoder(encoder.out_channels, block="dwsep", up="bilinear")
    features = encoder(torch.randn(3, 1, 16, 16))
    assert [tuple(f.shape[1:]) for f in features] == [(8, 16, 16), (16, 8, 8), (32, 4, 4)]
    assert decoder(features).shape == (3, 8, 16, 16)
    with pytest.raises(ValueError, match="expects 3 features"):
        decoder(features[1:])


def test_unet_registered_and_bad_options() -> None:
    assert "unet" in list_models()
    model = create_model("unet", in_ch=4, widths=(8, 16), block="elan")
    assert model(torch.randn(1, 4, 8, 8)).shape == (1, 1, 8, 8)
    with pytest.raises(ValueError, match="down must be"):
        UNet(1, 1, widths=WIDTHS, down="stride")
    with pytest.raises(ValueError, match="up must be"):
        UNet(1, 1, widths=WIDTHS, up="nearest")
    with pytest.raises(KeyError, match="unknown block"):
        UNet(1, 1, widths=WIDTHS, block="nope")


def test_repconv_unet_reparameterized_matches() -> None:
    torch.manual_seed(0)
    model = UNet(1, 1, widths=WIDTHS, block="repconv", blocks_per_stage=2)
    model.train()
    for _ in range(3):  # non-trivial BatchNorm running statistics
        model(torch.randn(2, 1, 8, 8))
    model.eval()
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        reference = model(x)
        reparameterize_model(model)
        fused = model(x)
    assert all(m.is_fused for m in model.modules() if isinstance(m, RepConv))
    torch.testing.assert_close(fused, reference, atol=1e-4, rtol=1e-4)
