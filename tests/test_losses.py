"""Tests of recon.losses: values from definitions and hand arithmetic, masks, gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from recon.losses import (
    CrossEntropyLoss,
    KDLoss,
    MaskedL1Loss,
    MaskedMSELoss,
    NormalizedFeatureLoss,
    NPCCLoss,
    OPDLoss,
    OverhaulFeatureLoss,
    PairwiseSimilarityLoss,
    PixelwiseKLLoss,
    ResponseMSE,
    SigmoidFocalLoss,
    SoftDiceLoss,
    SoftIoULoss,
    WeightedBCELoss,
    margin_relu,
    overhaul_margin,
    partial_l2_loss,
    pos_weight_from_counts,
    remove_piston,
    sigmoid_focal_loss,
)

# float32 NPCC of a map with itself is -1 to rounding (~1e-7 per op over 256 pixels).
ATOL = 1e-5


@pytest.fixture
def maps() -> torch.Tensor:
    """Four random 16x16 OPD-like maps in nm (RMS ~100 nm), shape (B, 1, H, W)."""
    g = torch.Generator().manual_seed(0)
    return 100.0 * torch.randn(4, 1, 16, 16, generator=g)


@pytest.fixture
def pupil() -> torch.Tensor:
    """Circular bool mask (16, 16)."""
    yy, xx = torch.meshgrid(torch.arange(16) - 7.5, torch.arange(16) - 7.5, indexing="ij")
    return (yy**2 + xx**2) <= 7.5**2


# ----------------------------------------------------------------------- regression


def test_npcc_identity_negation_and_scale(maps: torch.Tensor) -> None:
    loss = NPCCLoss()
    assert loss(maps, maps).item() == pytest.approx(-1.0, abs=ATOL)
    assert loss(-maps, maps).item() == pytest.approx(1.0, abs=ATOL)
    # Pearson is invariant to a positive scale and an offset of either map.
    assert loss(3.0 * maps + 50.0, maps).item() == pytest.approx(-1.0, abs=ATOL)
    other = torch.randn_like(maps)
    assert loss(7.0 * other, maps).item() == pytest.approx(loss(other, maps).item(), abs=ATOL)
    # (B, H, W) inputs give the same value as (B, 1, H, W).
    assert loss(other[:, 0], maps[:, 0]).item() == pytest.approx(loss(other, maps).item())


def test_npcc_constant_map_is_finite_with_finite_gradient(maps: torch.Tensor) -> None:
    const = torch.full_like(maps, 5.0, requires_grad=True)
    value = NPCCLoss()(const, maps)
    value.backward()
    assert torch.isfinite(value) and value.item() == pytest.approx(0.0, abs=ATOL)
    assert torch.isfinite(const.grad).all()


def test_npcc_blind_to_scale_but_opd_loss_is_not(maps: torch.Tensor) -> None:
    npcc, opd = NPCCLoss(), OPDLoss(w_npcc=1.0, w_pix=1e-4)
    assert npcc(2 * maps, maps).item() == pytest.approx(npcc(maps, maps).item(), abs=ATOL)
    assert opd(2 * maps, maps).item() > opd(maps, maps).item() + 0.1  # MSE term ~1e4 nm^2 * 1e-4


@pytest.mark.parametrize("pixel", ["mse", "l1"])
def test_opd_loss_invariant_to_piston(maps: torch.Tensor, pupil: torch.Tensor, pixel: str) -> None:
    loss = OPDLoss(w_npcc=1.0, w_pix=1e-3, pixel=pixel)
    pred = maps + 0.2 * torch.randn_like(maps) * maps.std()
    offsets = torch.tensor([30.0, -200.0, 0.0, 1000.0]).view(4, 1, 1, 1)  # nm, per sample
    ref = loss(pred, maps, pupil)
    assert loss(pred + offsets, maps, pupil).item() == pytest.approx(ref.item(), rel=1e-4)
    assert loss(pred, maps - offsets, pupil).item() == pytest.approx(ref.item(), rel=1e-4)
    # Without piston removal the MSE would change by offset^2 (up to 1e6 nm^2): check that
    # the pixel loss itself is not invariant, so the test above can fail.
    raw = MaskedMSELoss()(pred + offsets, maps, pupil)
    assert raw.item() > MaskedMSELoss()(pred, maps, pupil).item() + 1e3


def test_remove_piston_zero_mean_over_mask(maps: torch.Tensor, pupil: torch.Tensor) -> None:
    out = remove_piston(maps + 123.0, pupil)
    assert out.shape == maps.shape
    means = out[:, 0][:, pupil].mean(1)
    assert torch.allclose(means, torch.zeros(4), atol=1e-3)  # nm; float32 sums of ~200 x 100 nm


@pytest.mark.parametrize(
    "loss", [NPCCLoss(), MaskedMSELoss(), MaskedL1Loss(), OPDLoss(w_pix=1e-4, pixel="l1")]
)
def test_pixels_outside_mask_do_not_change_loss(
    loss: nn.Module, maps: torch.Tensor, pupil: torch.Tensor
) -> None:
    pred = maps.flip(-1)
    garbage = 1e4 * torch.randn_like(maps)
    outside = ~pupil
    pred2, target2 = pred.clone(), maps.clone()
    pred2[..., outside] = garbage[..., outside]
    target2[..., outside] = -garbage[..., outside]
    assert loss(pred2, target2, pupil).item() == pytest.approx(loss(pred, maps, pupil).item())
    # Per-sample masks (B, H, W) and float masks give the same as the shared bool mask.
    per_sample = pupil.expand(4, 16, 16)
    assert loss(pred2, target2, per_sample.float()).item() == pytest.approx(
        loss(pred, maps, pupil).item()
    )
    # Without the mask the garbage counts: the test can fail.
    assert loss(pred2, target2).item() != pytest.approx(loss(pred, maps).item())


def test_masked_mse_and_l1_values() -> None:
    pred = torch.tensor([[[1.0, 2.0], [3.0, 10.0]]])  # (1, 2, 2) nm
    target = torch.zeros(1, 2, 2)
    mask = torch.tensor([[True, True], [True, False]])
    assert MaskedMSELoss()(pred, target, mask).item() == pytest.approx((1 + 4 + 9) / 3)
    assert MaskedL1Loss()(pred, target, mask).item() == pytest.approx((1 + 2 + 3) / 3)


# --------------------------------------------------------------------- segmentation


def test_cross_entropy_matches_torch_and_respects_mask() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 4, 4, generator=g)
    target = torch.randint(0, 3, (2, 4, 4), generator=g)
    weight = torch.tensor([1.0, 2.0, 0.5])
    loss = CrossEntropyLoss(weight=weight)
    assert loss(logits, target).item() == pytest.approx(
        F.cross_entropy(logits, target, weight=weight).item(), rel=1e-6
    )
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[:, :2] = True
    expected = F.cross_entropy(logits[..., :2], target[..., :2], weight=weight)
    assert loss(logits, target, mask).item() == pytest.approx(expected.item(), rel=1e-6)
    # ignore_index as torch: ignored pixels leave numerator and denominator.
    target[0, 0, :] = -100
    expected = F.cross_entropy(logits, target, weight=weight, ignore_index=-100)
    assert loss(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)


def test_pos_weight_from_counts_and_weighted_bce() -> None:
    target = torch.tensor([[1.0, 0.0, 0.0, 0.0]])  # 1 positive, 3 negatives -> pos_weight 3
    logits = torch.tensor([[0.3, -1.0, 2.0, 0.5]])
    assert pos_weight_from_counts(target).item() == pytest.approx(3.0)
    expected = F.binary_cross_entropy_with_logits(logits, target, pos_weight=torch.tensor(3.0))
    assert WeightedBCELoss()(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)
    # Masking one negative: 1 positive, 2 negatives -> pos_weight 2, mean over 3 elements.
    mask = torch.tensor([[True, True, True, False]])
    assert pos_weight_from_counts(target, mask).item() == pytest.approx(2.0)
    expected = F.binary_cross_entropy_with_logits(
        logits[:, :3], target[:, :3], pos_weight=torch.tensor(2.0)
    )
    assert WeightedBCELoss()(logits, target, mask).item() == pytest.approx(expected.item())
    # A given pos_weight is used as is.
    expected = F.binary_cross_entropy_with_logits(logits, target, pos_weight=torch.tensor(5.0))
    assert WeightedBCELoss(5.0)(logits, target).item() == pytest.approx(expected.item())


def test_focal_loss_by_hand() -> None:
    # Element 1: logit 0 -> p = 0.5, target 1: p_t = 0.5, CE = ln 2, alpha_t = 0.25,
    #   FL = 0.25 * (1 - 0.5)^2 * ln 2.
    # Element 2: logit ln 3 -> p = 0.75, target 0: p_t = 0.25, CE = -ln 0.25 = ln 4,
    #   alpha_t = 0.75, FL = 0.75 * (1 - 0.25)^2 * ln 4.
    logits = torch.tensor([0.0, math.log(3.0)])
    target = torch.tensor([1.0, 0.0])
    fl1 = 0.25 * 0.5**2 * math.log(2.0)
    fl2 = 0.75 * 0.75**2 * math.log(4.0)
    loss = SigmoidFocalLoss(alpha=0.25, gamma=2.0, reduction="none")(logits, target)
    assert loss.tolist() == pytest.approx([fl1, fl2], rel=1e-6)
    assert SigmoidFocalLoss()(logits, target).item() == pytest.approx((fl1 + fl2) / 2, rel=1e-6)
    summed = SigmoidFocalLoss(reduction="sum")(logits, target).item()
    assert summed == pytest.approx(fl1 + fl2, rel=1e-6)
    # Masking element 2 leaves element 1 alone.
    mask = torch.tensor([True, False])
    assert SigmoidFocalLoss()(logits, target, mask).item() == pytest.approx(fl1, rel=1e-6)


def test_focal_gamma_zero_is_alpha_weighted_bce() -> None:
    g = torch.Generator().manual_seed(2)
    logits = 3 * torch.randn(2, 1, 5, 5, generator=g)
    target = (torch.rand(2, 1, 5, 5, generator=g) > 0.7).float()
    alpha = 0.3
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    expected = (bce * (alpha * target + (1 - alpha) * (1 - target))).mean()
    got = sigmoid_focal_loss(logits, target, alpha=alpha, gamma=0.0)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    # gamma > 0 down-weights easy examples: strictly smaller loss.
    assert sigmoid_focal_loss(logits, target, alpha=alpha, gamma=2.0).item() < got.item()


def test_focal_matches_torchvision() -> None:
    ops = pytest.importorskip("torchvision.ops")
    g = torch.Generator().manual_seed(3)
    logits = 2 * torch.randn(2, 3, 4, 4, generator=g)
    target = (torch.rand(2, 3, 4, 4, generator=g) > 0.5).float()
    for reduction in ("none", "mean", "sum"):
        ref = ops.sigmoid_focal_loss(logits, target, alpha=0.25, gamma=2.0, reduction=reduction)
        got = sigmoid_focal_loss(logits, target, alpha=0.25, gamma=2.0, reduction=reduction)
        assert torch.allclose(got, ref, rtol=1e-5, atol=1e-7)


def _binary_case() -> tuple[torch.Tensor, torch.Tensor]:
    probs = torch.tensor([[[0.8, 0.6], [0.2, 0.4]]])  # (1, 2, 2)
    target = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    return torch.logit(probs), target


def test_soft_dice_binary_by_hand() -> None:
    logits, target = _binary_case()
    # I = 0.8 + 0.6 = 1.4, P = 0.8 + 0.6 + 0.2 + 0.4 = 2.0, T = 2.
    # smooth 0: Dice = 2 * 1.4 / (2 + 2) = 0.7 -> loss 0.3.
    assert SoftDiceLoss(smooth=0.0)(logits, target).item() == pytest.approx(0.3, abs=1e-6)
    # smooth 1: Dice = (2.8 + 1) / (4 + 1) = 0.76 -> loss 0.24.
    assert SoftDiceLoss(smooth=1.0)(logits, target).item() == pytest.approx(0.24, abs=1e-6)
    # Mask out the p = 0.4 pixel: I = 1.4, P = 1.6, T = 2 -> Dice = 2.8 / 3.6 = 7/9.
    mask = torch.tensor([[True, True], [True, False]])
    got = SoftDiceLoss(smooth=0.0)(logits, target, mask).item()
    assert got == pytest.approx(1 - 7 / 9, abs=1e-6)
    # (B, 1, H, W) logits give the same.
    assert SoftDiceLoss(smooth=0.0)(logits[:, None], target).item() == pytest.approx(0.3, abs=1e-6)


def test_soft_iou_binary_by_hand() -> None:
    logits, target = _binary_case()
    # IoU = I / (P + T - I) = 1.4 / (2 + 2 - 1.4) = 1.4 / 2.6 -> loss 1.2 / 2.6.
    assert SoftIoULoss(smooth=0.0)(logits, target).item() == pytest.approx(1.2 / 2.6, abs=1e-6)
    # Mask out the p = 0.4 pixel: 1.4 / (1.6 + 2 - 1.4) = 1.4 / 2.2 -> loss 0.8 / 2.2.
    mask = torch.tensor([[True, True], [True, False]])
    got = SoftIoULoss(smooth=0.0)(logits, target, mask).item()
    assert got == pytest.approx(0.8 / 2.2, abs=1e-6)


def test_soft_dice_and_iou_multiclass_by_hand() -> None:
    # Two pixels, two classes. Pixel 1 logits (ln 3, 0) -> softmax (0.75, 0.25), class 0;
    # pixel 2 logits (0, 0) -> (0.5, 0.5), class 1.
    logits = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]]).T.reshape(1, 2, 1, 2)
    target = torch.tensor([[[0, 1]]])
    # class 0: I = 0.75, P = 1.25, T = 1 -> Dice 1.5 / 2.25 = 2/3, IoU 0.75 / 1.5 = 1/2
    # class 1: I = 0.5,  P = 0.75, T = 1 -> Dice 1.0 / 1.75 = 4/7, IoU 0.5 / 1.25 = 2/5
    dice = SoftDiceLoss(smooth=0.0)(logits, target).item()
    assert dice == pytest.approx(1 - (2 / 3 + 4 / 7) / 2, abs=1e-6)
    iou = SoftIoULoss(smooth=0.0)(logits, target).item()
    assert iou == pytest.approx(1 - (1 / 2 + 2 / 5) / 2, abs=1e-6)
    # Masking pixel 2: class 0: I 0.75, P 0.75, T 1 -> 1.5/1.75; class 1: I 0, P 0.25,
    # T 0 -> 0 (with smooth 0).
    mask = torch.tensor([[True, False]])
    got = SoftDiceLoss(smooth=0.0)(logits, target, mask).item()
    assert got == pytest.approx(1 - (1.5 / 1.75 + 0.0) / 2, abs=1e-6)


# --------------------------------------------------------------------- distillation


def test_kd_zero_for_identical_positive_otherwise_and_t2_scaling() -> None:
    g = torch.Generator().manual_seed(4)
    s, t = torch.randn(5, 10, generator=g), torch.randn(5, 10, generator=g)
    assert KDLoss(4.0)(t, t).item() == pytest.approx(0.0, abs=1e-6)
    assert KDLoss(4.0)(s, t).item() > 1e-3
    for temp in (1.0, 2.0, 8.0):
        p_t = torch.softmax(t / temp, 1)
        kl = (p_t * (p_t.log() - torch.log_softmax(s / temp, 1))).sum(1).mean()
        assert KDLoss(temp)(s, t).item() == pytest.approx(temp**2 * kl.item(), rel=1e-5)


def test_pixelwise_kl_by_definition_and_mask() -> None:
    g = torch.Generator().manual_seed(5)
    s, t = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    loss = PixelwiseKLLoss(temperature=2.0)
    assert loss(t, t).item() == pytest.approx(0.0, abs=1e-6)
    p_t = torch.softmax(t / 2, 1)
    kl = (p_t * (p_t.log() - torch.log_softmax(s / 2, 1))).sum(1)  # (B, H, W)
    assert loss(s, t).item() == pytest.approx(4 * kl.mean().item(), rel=1e-5)
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[1:3, 1:3] = True
    assert loss(s, t, mask).item() == pytest.approx(4 * kl[:, mask].mean().item(), rel=1e-5)


def test_pairwise_similarity() -> None:
    g = torch.Generator().manual_seed(6)
    feat = torch.randn(2, 8, 6, 6, generator=g)
    loss = PairwiseSimilarityLoss()
    assert loss(feat, feat).item() == pytest.approx(0.0, abs=1e-6)
    # Similarities ignore the channel count and per-position scale: a teacher with the
    # student's channels repeated and scaled has the same similarity matrix.
    teacher = torch.cat([feat, feat], 1) * 3.0
    assert loss(feat, teacher).item() == pytest.approx(0.0, abs=1e-6)
    assert loss(feat, torch.randn(2, 16, 6, 6, generator=g)).item() > 1e-3
    assert PairwiseSimilarityLoss(pool=2)(feat, teacher).item() == pytest.approx(0.0, abs=1e-6)


def test_normalized_feature_loss() -> None:
    g = torch.Generator().manual_seed(7)
    feat = torch.randn(2, 4, 5, 5, generator=g)
    scale = torch.tensor([1.0, 2.0, 0.5, 10.0]).view(1, 4, 1, 1)
    loss = NormalizedFeatureLoss()
    # Per-channel standardisation removes a positive per-channel scale and offset.
    assert loss(feat, scale * feat + 3.0).item() == pytest.approx(0.0, abs=1e-4)
    assert loss(feat, torch.randn(2, 4, 5, 5, generator=g)).item() > 0.1


def test_overhaul_margin_matches_monte_carlo() -> None:
    bn = nn.BatchNorm2d(5)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, -0.5, 0.7, 1.0]))  # std = |gamma|
        bn.bias.copy_(torch.tensor([0.0, 1.0, -0.3, 0.5, 10.0]))  # mean = beta
    margin = overhaul_margin(bn)
    g = torch.Generator().manual_seed(8)
    n = 400_000
    for c in range(4):
        x = bn.bias[c].item() + abs(bn.weight[c].item()) * torch.randn(n, generator=g)
        neg = x[x < 0]
        # E[x | x < 0] from samples; standard error <= std / sqrt(#neg) < 2 / sqrt(4e4) = 0.01.
        assert margin[c].item() == pytest.approx(neg.mean().item(), abs=0.03)
    # Channel 0, N(0, 1): E[x | x < 0] = -sqrt(2 / pi) exactly.
    assert margin[0].item() == pytest.approx(-math.sqrt(2 / math.pi), rel=1e-5)
    # Channel 4: P(x < 0) = Phi(-10) < 1e-3 -> the authors' fallback -3 std.
    assert margin[4].item() == pytest.approx(-3.0)


def test_partial_l2_ignores_the_right_positions() -> None:
    target = torch.tensor([-1.0, -1.0, 2.0, 2.0, 0.0, 0.0])
    student = torch.tensor([-3.0, 0.5, 1.0, 4.0, -1.0, 1.0])
    # skipped where student <= target <= 0: positions 0 (-3 <= -1 <= 0) and 4 (-1 <= 0 <= 0)
    expected = torch.tensor([0.0, 1.5**2, 1.0, 4.0, 0.0, 1.0])
    assert torch.allclose(partial_l2_loss(student, target), expected)
    # Moving skipped students further below changes nothing.
    lower = student.clone()
    lower[[0, 4]] -= 10.0
    assert torch.allclose(partial_l2_loss(lower, target), expected)
    # Margin ReLU: max(x, m) per channel.
    x = torch.tensor([-5.0, -0.1, 2.0]).view(1, 3, 1, 1)
    m = torch.tensor([-1.0, -1.0, -1.0])
    assert margin_relu(x, m).flatten().tolist() == pytest.approx([-1.0, -0.1, 2.0])


def test_response_mse() -> None:
    g = torch.Generator().manual_seed(9)
    teacher = 100 * torch.randn(2, 1, 8, 8, generator=g)
    assert ResponseMSE()(teacher + 42.0, teacher).item() == pytest.approx(0.0, abs=1e-6)
    assert ResponseMSE(remove_piston=False)(teacher + 2.0, teacher).item() == pytest.approx(4.0)


def _distillation_cases() -> list[tuple[nn.Module, tuple[int, ...], tuple[int, ...]]]:
    """(loss, student shape, teacher shape) for every distillation loss."""
    bn = nn.BatchNorm2d(6)
    return [
        (KDLoss(2.0), (3, 10), (3, 10)),
        (PixelwiseKLLoss(), (2, 4, 5, 5), (2, 4, 5, 5)),
        (PairwiseSimilarityLoss(), (2, 4, 5, 5), (2, 6, 5, 5)),
        (NormalizedFeatureLoss(4, 6), (2, 4, 5, 5), (2, 6, 5, 5)),
        (OverhaulFeatureLoss(4, 6, teacher_bn=bn), (2, 4, 5, 5), (2, 6, 5, 5)),
        (ResponseMSE(), (2, 1, 5, 5), (2, 1, 5, 5)),
    ]


@pytest.mark.parametrize(("loss", "s_shape", "t_shape"), _distillation_cases())
def test_gradients_flow_to_student(
    loss: nn.Module, s_shape: tuple[int, ...], t_shape: tuple[int, ...]
) -> None:
    g = torch.Generator().manual_seed(10)
    student = torch.randn(s_shape, generator=g, requires_grad=True)
    teacher = torch.randn(t_shape, generator=g, requires_grad=True)
    value = loss(student, teacher)
    value.backward()
    assert value.ndim == 0 and torch.isfinite(value)
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None  # the teacher is detached by default
    for name, p in loss.named_parameters():  # connectors train with the student
        assert p.grad is not None and p.grad.abs().sum() > 0, name
