"""Private helpers shared by the loss modules: map shapes and mask broadcasting."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["as_maps", "mask_weights", "weighted_mean"]

# Smallest weight sum used as a denominator: an empty mask gives a loss of 0, not NaN.
TINY = 1e-12


def as_maps(x: Tensor, name: str = "input") -> Tensor:
    """Return single-channel maps as (B, H, W): accepts (B, 1, H, W) or (B, H, W)."""
    if x.ndim == 4 and x.shape[1] == 1:
        return x[:, 0]  # (B, 1, H, W) -> (B, H, W)
    if x.ndim == 3:
        return x
    raise ValueError(f"{name} must have shape (B, 1, H, W) or (B, H, W), got {tuple(x.shape)}")


def mask_weights(mask: Tensor | None, ref: Tensor, *, channels: bool = False) -> Tensor:
    """Broadcast a mask to the shape of `ref` as float weights (a view where possible).

    ref: (B, *S), or (B, C, *S) when `channels` is True (S the spatial dims, possibly none).
    mask: None (all ones), S, (B, *S) or (B, 1, *S); bool or float (float values are
    weights, e.g. a gray-edged pupil transmission in [0, 1]).
    """
    if mask is None:
        return torch.ones((), dtype=ref.dtype, device=ref.device).expand(ref.shape)
    spatial = tuple(ref.shape[2:] if channels else ref.shape[1:])
    m = mask.to(device=ref.device, dtype=ref.dtype)
    if m.ndim == len(spatial) + 2 and m.shape[1] == 1:
        m = m[:, 0]  # (B, 1, *S) -> (B, *S)
    if m.ndim == len(spatial):
        m = m.unsqueeze(0)  # S -> (1, *S)
    if m.ndim != len(spatial) + 1 or tuple(m.shape[1:]) != spatial:
        raise ValueError(
            f"mask shape {tuple(mask.shape)} does not fit input shape {tuple(ref.shape)}: "
            f"expected {spatial}, (B, *{spatial}) or (B, 1, *{spatial})"
        )
    m = m.expand(ref.shape[0], *spatial)
    if channels:
        m = m.unsqueeze(1).expand(ref.shape)  # (B, *S) -> (B, C, *S)
    return m


def weighted_mean(values: Tensor, weights: Tensor, dim: tuple[int, ...] | None = None) -> Tensor:
    """Sum of weights * values over `dim` (all dims if None) divided by the weight sum."""
    if dim is None:
        return (values * weights).sum() / weights.sum().clamp_min(TINY)
    return (values * weights).sum(dim) / weights.sum(dim).clamp_min(TINY)
