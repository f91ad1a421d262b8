"""Encoders of every block as feature extractors (feature_info), the classification and
segmentation heads, class addition through the classifier, and width scaling."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from recon.nn import (
    Classifier,
    FeatureInfo,
    count_flops,
    count_parameters,
    create_model,
    list_blocks,
    scale_widths,
    widths_for_cost,
    widths_for_flops,
)

WIDTHS = [8, 16, 32]


@pytest.mark.parametrize("block", list_blocks())
def test_feature_info_describes_what_every_encoder_returns(block: str) -> None:
    torch.manual_seed(0)
    encoder = create_model("encoder", in_ch=3, widths=WIDTHS, block=block)
    features = encoder(torch.randn(2, 3, 16, 12))
    info = encoder.feature_info
    assert info.channels() == WIDTHS
    assert info.reduction() == [1, 2, 4]
    assert [tuple(f.shape) for f in features] == [
        (2, c, 16 // r, 12 // r) for c, r in zip(info.channels(), info.reduction(), strict=True)
    ]
    modules = dict(encoder.named_modules())
    assert all(name in modules for name in info.module_name())


def test_feature_info_is_checked() -> None:
    info = FeatureInfo([4, 8], [2, 4])
    assert info[1] == {"num_chs": 8, "reduction": 4, "module": "stages.1"}
    assert [d["num_chs"] for d in info] == [4, 8]
    with pytest.raises(ValueError, match="as many"):
        FeatureInfo([4, 8], [1])
    with pytest.raises(ValueError, match="must not decrease"):
        FeatureInfo([4, 8], [2, 1])
    with pytest.raises(ValueError, match="not out_ch"):
        create_model("encoder", in_ch=1, out_ch=3)


@pytest.mark.parametrize("block", ["residual", "dwsep", "elan", "edgevit"])
def test_classifier_and_segmenter_shapes_and_gradients(block: str) -> None:
    torch.manual_seed(0)
    clf = create_model("classifier", in_ch=2, out_ch=7, widths=WIDTHS, block=block)
    seg = create_model("segmenter", in_ch=2, out_ch=5, widths=WIDTHS, block=block, embed=16)
    x = torch.randn(3, 2, 16, 16)
    logits, maps = clf(x), seg(x)
    assert logits.shape == (3, 7) and maps.shape == (3, 5, 16, 16)
    assert clf.forward_head(clf.forward_features(x), pre_logits=True).shape == (3, 32)
    (logits.square().sum() + maps.square().sum()).backward()
    for model in (clf, seg):
        for name, p in model.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{name}: no gradient"


def test_add_class_keeps_the_old_logits_and_adds_one() -> None:
    torch.manual_seed(0)
    clf = create_model("classifier", in_ch=1, out_ch=4, widths=WIDTHS).eval()
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        before = clf(x)
        index = clf.add_class(torch.randn(3, 1, 8, 8))
        after = clf(x)
    assert index == 4 and clf.num_classes == 5 and after.shape == (5, 5)
    torch.testing.assert_close(after[:, :4], before)
    assert not clf.training


def test_segmenter_learns_to_label_bright_pixels() -> None:
    """Two classes: pixels of a blurred random image above its median, and the rest; a
    few Adam steps must label >= 90 % of the pixels of new images right (chance: 50 %)."""
    torch.manual_seed(0)

    def batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = F.avg_pool2d(torch.randn(n, 1, 20, 20), 5, 1)  # (n, 1, 16, 16), smooth blobs
        return img, (img > img.flatten(1).median(1).values.view(n, 1, 1, 1)).long()[:, 0]

    seg = create_model("segmenter", in_ch=1, out_ch=2, widths=WIDTHS, block="residual")
    opt = torch.optim.Adam(seg.parameters(), lr=1e-2)
    for _ in range(60):
        x, y = batch(16)
        loss = F.cross_entropy(seg(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, y = batch(32)
    with torch.no_grad():
        acc = (seg.eval()(x).argmax(1) == y).float().mean().item()
    assert acc >= 0.9, acc


def test_classifier_takes_any_encoder_with_feature_info() -> None:
    encoder = create_model("encoder", in_ch=1, widths=[4, 8], block="dwsep")
    clf = Classifier(encoder, num_classes=3)
    assert clf.num_features == 8 and clf(torch.randn(2, 1, 8, 8)).shape == (2, 3)


def test_scale_widths_rounds_to_a_multiple() -> None:
    assert scale_widths([8, 16, 32], 1.3) == [10, 21, 42]
    assert scale_widths([8, 16, 32], 1.3, multiple=4) == [12, 20, 40]
    assert scale_widths([8, 16], 0.01, multiple=2) == [2, 2]


def test_widths_for_flops_matches_a_narrower_block_to_the_residual_unet() -> None:
    shape = (1, 4, 32, 32)

    def build(block: str):
        return lambda w: create_model("unet", in_ch=4, widths=w, block=block)

    target = count_flops(build("residual")(WIDTHS), shape)
    assert count_flops(build("dwsep")(WIDTHS), shape) < 0.3 * target  # far apart at equal widths
    widths, flops = widths_for_flops(build("dwsep"), WIDTHS, target, shape, rel_tol=0.03)
    assert abs(flops - target) <= 0.03 * target
    assert flops == count_flops(build("dwsep")(widths), shape)
    assert widths[0] > WIDTHS[0]  # the cheaper block got wider
    with pytest.raises(ValueError, match="comes within"):
        widths_for_cost(build("residual"), WIDTHS, 1.0, count_parameters)  # 1 parameter
