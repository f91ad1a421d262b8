"""Width scaling: the channel widths that give a model a wanted cost.

Comparing blocks fairly means comparing them at equal cost: `widths_for_cost` scales
every stage width by one factor (the EfficientNet width multiplier, Tan & Le, ICML 2019)
and searches the factor whose model's cost (FLOPs: `widths_for_flops`; parameters, or
anything that grows with the widths) is closest to a target.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch.nn as nn

from recon.nn.complexity import count_flops

__all__ = ["scale_widths", "widths_for_cost", "widths_for_flops"]


def scale_widths(widths: Sequence[int], factor: float, multiple: int = 1) -> list[int]:
    """Each width times `factor`, rounded to the nearest multiple of `multiple` (at least one
    `multiple`)."""
    if factor <= 0 or multiple < 1:
        raise ValueError(f"factor must be > 0 and multiple >= 1, got {factor}, {multiple}")
    return [max(multiple, multiple * round(w * factor / multiple)) for w in widths]


def widths_for_cost(
    build: Callable[[list[int]], nn.Module],
    widths: Sequence[int],
    target: float,
    cost: Callable[[nn.Module], float],
    multiple: int = 1,
    rel_tol: float = 0.03,
) -> tuple[list[int], float]:
    """The scaled `widths` whose model ``build(widths)`` has the cost closest to `target`.

    The cost grows with the factor, so a bisection over log(factor) in [1/16, 16] finds
    the crossing; the width lists met on the way are candidates, and the closest wins.

    Args:
        build: the model from a list of widths.
        widths: the base widths (factor 1).
        target: the cost wanted, in the units of `cost`.
        cost: the cost of a model (e.g. `count_parameters`).
        multiple: every width a multiple of this.
        rel_tol: `ValueError` when the closest is farther than this from the target.

    Returns:
        (widths, cost) of the closest model.
    """
    cache: dict[tuple[int, ...], float] = {}

    def at(factor: float) -> float:
        key = tuple(scale_widths(widths, factor, multiple))
        if key not in cache:
            cache[key] = cost(build(list(key)))
        return cache[key]

    lo, hi = math.log(1 / 16), math.log(16)
    while hi - lo > 1e-4:
        mid = 0.5 * (lo + hi)
        if at(math.exp(mid)) < target:
            lo = mid
        else:
            hi = mid
    best = min(cache, key=lambda k: abs(cache[k] - target))
    error = abs(cache[best] - target) / target
    if error > rel_tol:
        raise ValueError(
            f"no scaling of widths {list(widths)} comes within {rel_tol:.0%} of "
            f"{target:.3g} (closest {list(best)}: {cache[best]:.3g}, {error:.1%} off)"
        )
    return list(best), cache[best]


def widths_for_flops(
    build: Callable[[list[int]], nn.Module],
    widths: Sequence[int],
    target_flops: float,
    input_shape: Sequence[int],
    multiple: int = 1,
    rel_tol: float = 0.03,
) -> tuple[list[int], int]:
    """`widths_for_cost` with the FLOPs of one forward pass at `input_shape` as the cost
    (`count_flops`); returns (widths, FLOPs)."""
    found, flops = widths_for_cost(
        build, widths, target_flops, lambda m: count_flops(m, input_shape), multiple, rel_tol
    )
    return found, int(flops)
