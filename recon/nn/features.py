"""What a hierarchical encoder returns, stage by stage (timm's ``feature_info``).

An encoder's forward returns a list of feature maps, finest first; its `feature_info`
says, for each, the channels, the stride (reduction) from the input and the module that
produces it, so that heads and decoders can be built for any encoder without running it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["FeatureInfo"]


class FeatureInfo(Sequence[dict[str, Any]]):
    """One dict per returned feature map: ``num_chs``, ``reduction`` [input pixels per
    feature pixel] and ``module`` (its name in the encoder), as timm's `FeatureInfo`.

    Args:
        channels: channels of each map, finest first.
        reductions: stride of each map relative to the input, non-decreasing.
        modules: the name of the module producing each map (default ``stages.i``).
    """

    def __init__(
        self,
        channels: Sequence[int],
        reductions: Sequence[int],
        modules: Sequence[str] | None = None,
    ) -> None:
        if modules is None:
            modules = [f"stages.{i}" for i in range(len(channels))]
        if not (len(channels) == len(reductions) == len(modules)) or not channels:
            raise ValueError(
                f"feature info needs as many channels, reductions and modules (>= 1), got "
                f"{len(channels)}, {len(reductions)}, {len(modules)}"
            )
        if any(b < a for a, b in itertools.pairwise(reductions)):
            raise ValueError(f"reductions must not decrease, got {list(reductions)}")
        self._info = [
            {"num_chs": int(c), "reduction": int(r), "module": m}
            for c, r, m in zip(channels, reductions, modules, strict=True)
        ]

    def __getitem__(self, i: int) -> dict[str, Any]:  # type: ignore[override]
        return dict(self._info[i])

    def __len__(self) -> int:
        return len(self._info)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (dict(d) for d in self._info)

    def channels(self) -> list[int]:
        """Channels of each feature map, finest first."""
        return [d["num_chs"] for d in self._info]

    def reduction(self) -> list[int]:
        """Stride of each feature map relative to the input."""
        return [d["reduction"] for d in self._info]

    def module_name(self) -> list[str]:
        """Name of the module that produces each feature map."""
        return [d["module"] for d in self._info]

    def __repr__(self) -> str:
        return f"FeatureInfo(channels={self.channels()}, reduction={self.reduction()})"
