"""Optional timm encoders: a clear ImportError without timm; a working U-Net with it."""

from __future__ import annotations

import sys

import pytest
import torch

from recon.nn import TimmEncoder, TimmUNet


def test_missing_timm_names_the_vision_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # makes `import timm` raise ImportError
    with pytest.raises(ImportError, match="'vision' extra"):
        TimmEncoder("resnet18", in_ch=4)


def test_timm_unet_shapes_and_gradients() -> None:
    pytest.importorskip("timm")
    torch.manual_seed(0)
    model = TimmUNet(4, 1, encoder="resnet18", encoder_kw={"out_indices": (0, 1, 2)})
    assert model.encoder.reductions == [2, 4, 8]
    y = model(torch.randn(2, 4, 32, 32))
    assert y.shape == (2, 1, 32, 32) and torch.isfinite(y).all()
    y.square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
    with pytest.raises(ValueError, match="divisible by 8"):
        model(torch.randn(1, 4, 20, 20))
