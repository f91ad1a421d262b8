"""Frames divided by the clear-pupil frame, pixel by pixel (pyZELDA's normalisation).

Frames are normalised by the mean clear-pupil intensity inside the pupil; with an
uneven illumination that leaves the illumination's pattern in them. Dividing by the
clear frame itself, inside the pupil (clear >= `PUPIL_THRESHOLD`^2: the schema's
"inside" for a normalised clear frame), removes it; outside the pupil the frames are
left as they are (the clear frame is ~0 there).
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

from data.schema import PUPIL_THRESHOLD

__all__ = ["CLEAR_FLOOR", "divide_by_clear"]

CLEAR_FLOOR = PUPIL_THRESHOLD**2
"""A normalised clear frame above this is inside the pupil (transmission >= 0.5)."""

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def divide_by_clear(frames: ArrayT, clear: ArrayT) -> ArrayT:
    """frames / clear inside the pupil, unchanged outside; shapes broadcast (e.g. frames
    (B, L, H, W) and clear (B, L, H, W), (L, H, W) or (1, H, W)). NumPy or torch."""
    if isinstance(frames, torch.Tensor):
        c = torch.as_tensor(clear, dtype=frames.dtype, device=frames.device)
        inside = c >= CLEAR_FLOOR
        return torch.where(inside, frames / torch.where(inside, c, torch.ones_like(c)), frames)
    c = np.asarray(clear, dtype=frames.dtype)
    inside = c >= CLEAR_FLOOR
    return np.where(inside, frames / np.where(inside, c, 1.0), frames)
