"""Training a `recon.nn.Classifier` on small images, alone or distilled from a teacher."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recon.losses import KDLoss, NormalizedFeatureLoss
from recon.nn import Classifier

__all__ = ["Distillation", "FitConfig", "accuracy", "fit_classifier", "predict", "random_shift"]


@dataclass(frozen=True)
class FitConfig:
    """AdamW with a cosine schedule over every step; random shifts as augmentation.

    Attributes:
        epochs: passes over the training set.
        batch_size: images per step.
        lr: peak learning rate.
        weight_decay: AdamW weight decay.
        max_shift: images move by up to this many pixels in x and y (zero fill).
        seed: shuffling and augmentation (the model's initialisation is the caller's).
    """

    epochs: int = 60
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 5e-4
    max_shift: int = 1
    seed: int = 0


@dataclass(frozen=True)
class Distillation:
    """What a student learns from a trained teacher besides the labels.

    loss = (1 - kd_weight) CE + kd_weight KD(T) + feature_weight sum_i F_i, with KD the
    `KDLoss` of the logits at `temperature` and F_i the `NormalizedFeatureLoss` of
    encoder stage i (student and teacher encoders must have the same strides).
    """

    teacher: Classifier
    kd_weight: float = 0.5
    temperature: float = 4.0
    feature_weight: float = 0.0


def random_shift(x: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    """Each image (N, C, H, W) translated by its own integer (dy, dx) in [-s, s], zero fill."""
    if max_shift == 0:
        return x
    n, _, h, w = x.shape
    s = max_shift
    padded = F.pad(x, (s, s, s, s))  # (N, C, H + 2s, W + 2s)
    dy, dx = torch.randint(0, 2 * s + 1, (2, n), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, :, None]  # (N, H, 1)
    cols = (dx[:, None] + torch.arange(w))[:, None, :]  # (N, 1, W)
    batch = torch.arange(n)[:, None, None]
    return padded[batch, :, rows, cols].permute(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)


def fit_classifier(
    model: Classifier,
    x: Tensor,
    y: Tensor,
    cfg: FitConfig = FitConfig(),
    distill: Distillation | None = None,
) -> list[float]:
    """Train `model` on images x (N, C, H, W) and labels y (N,); returns each epoch's mean
    loss. The model is left in eval mode."""
    g = torch.Generator().manual_seed(cfg.seed)
    feature_losses = nn.ModuleList()
    if distill is not None:
        distill.teacher.eval().requires_grad_(False)
        s_ch = model.encoder.feature_info.channels()
        t_ch = distill.teacher.encoder.feature_info.channels()
        if (
            model.encoder.feature_info.reduction()
            != distill.teacher.encoder.feature_info.reduction()
        ):
            raise ValueError("student and teacher encoders must have the same strides")
        if distill.feature_weight > 0:
            feature_losses.extend(
                NormalizedFeatureLoss(s, t) for s, t in zip(s_ch, t_ch, strict=True)
            )
        kd = KDLoss(distill.temperature)
    params = [*model.parameters(), *feature_losses.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = -(-len(y) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.epochs * steps_per_epoch)
    history = []
    model.train()
    for _ in range(cfg.epochs):
        order = torch.randperm(len(y), generator=g)
        total = 0.0
        for i in range(0, len(y), cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            xb, yb = random_shift(x[idx], cfg.max_shift, g), y[idx]
            feats = model.encoder(xb)  # stage maps, finest first
            logits = model.forward_head(feats[-1])  # (B, classes)
            loss = F.cross_entropy(logits, yb)
            if distill is not None:
                with torch.no_grad():
                    t_feats = distill.teacher.encoder(xb)
                    t_logits = distill.teacher.forward_head(t_feats[-1])
                a = distill.kd_weight
                loss = (1 - a) * loss + a * kd(logits, t_logits)
                for fl, fs, ft in zip(feature_losses, feats, t_feats, strict=False):
                    loss = loss + distill.feature_weight * fl(fs, ft)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        history.append(total / len(y))
    model.eval()
    return history


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, batch_size: int = 512) -> Tensor:
    """Predicted labels (N,) of images x (N, C, H, W), in eval mode."""
    was_training = model.training
    model.eval()
    out = torch.cat([model(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])
    model.train(was_training)
    return out


def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """Share of images x (N, C, H, W) whose predicted label is y (N,); NaN when N = 0."""
    if len(y) == 0:
        return float("nan")
    return (predict(model, x) == y).float().mean().item()
