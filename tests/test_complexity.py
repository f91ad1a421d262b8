"""Parameter and FLOP counts against closed forms; timing helpers return sane numbers."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from recon.nn import (
    ModelComplexity,
    count_flops,
    count_parameters,
    create_model,
    measure_latency,
    measure_throughput,
    profile_model,
)


@pytest.mark.parametrize(
    ("c_in", "c_out", "k", "stride", "padding", "hw"),
    [(3, 8, 3, 1, 1, 16), (4, 6, 5, 2, 0, 17), (2, 2, 1, 1, 0, 9)],
)
def test_conv_flops_closed_form(
    c_in: int, c_out: int, k: int, stride: int, padding: int, hw: int
) -> None:
    conv = nn.Conv2d(c_in, c_out, k, stride=stride, padding=padding, bias=False)
    h_out = (hw + 2 * padding - k) // stride + 1
    # one multiply-add (2 FLOPs) per weight per output pixel
    assert count_flops(conv, (1, c_in, hw, hw)) == 2 * c_in * k**2 * c_out * h_out * h_out


def test_flops_scale_with_batch_and_count_depthwise_groups() -> None:
    conv = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
    assert count_flops(conv, (3, 8, 10, 10)) == 3 * 2 * 1 * 9 * 8 * 10 * 10


def test_count_parameters_matches_numel_sum() -> None:
    model = create_model("unet", in_ch=2, widths=(8, 16), block="csp")
    assert count_parameters(model) == sum(p.numel() for p in model.parameters())
    conv = nn.Conv2d(3, 5, 3)  # 3*5*9 weights + 5 biases
    assert count_parameters(conv) == 140
    conv.bias.requires_grad_(False)
    assert count_parameters(conv, trainable_only=True) == 135


def test_flop_count_leaves_training_mode_and_bn_stats_alone() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)).train()
    before = model[1].running_mean.clone()
    count_flops(model, (2, 1, 8, 8))
    assert model.training and torch.equal(model[1].running_mean, before)


def test_latency_throughput_and_profile() -> None:
    model = nn.Conv2d(2, 4, 3, padding=1)
    latency_ms = measure_latency(model, (2, 2, 16, 16), warmup=1, repeats=3)
    assert 0 < latency_ms < 1e4
    assert measure_throughput(model, (2, 2, 16, 16), warmup=1, repeats=3) > 0
    cost = profile_model(model, (2, 2, 16, 16), warmup=1, repeats=3)
    assert isinstance(cost, ModelComplexity)
    assert cost.params == 2 * 4 * 9 + 4
    assert cost.gflops == pytest.approx(2 * 2 * 9 * 4 * 16 * 16 * 2 / 1e9)
    assert cost.throughput_per_s == pytest.approx(2 / (cost.latency_ms * 1e-3))
    assert cost.to_dict()["input_shape"] == [2, 2, 16, 16]
    with pytest.raises(ValueError, match="repeats"):
        measure_latency(model, (1, 2, 8, 8), repeats=0)
