"""Inference at AO-loop speed: a model prepared for one device (plain torch only).

On CUDA: channels_last memory layout and `torch.compile(mode="reduce-overhead")`, which
captures the forward pass in CUDA graphs (one launch per call instead of one per kernel:
what batch-1 latency is made of). Compiling that fails falls back to eager execution.
On the CPU the model runs eagerly unless asked otherwise.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["inference_runner"]


def inference_runner(
    model: nn.Module, device: torch.device, compile_model: bool | None = None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A callable (B, L, H, W) -> model output, for `model` (already on `device`, eval).

    Args:
        compile_model: compile with CUDA graphs; None: on for CUDA, off on the CPU.
    """
    model.eval()
    cuda = device.type == "cuda"
    if cuda:
        model.to(memory_format=torch.channels_last)
    if not (compile_model if compile_model is not None else cuda):
        return model
    from torch import _dynamo

    _dynamo.config.suppress_errors = True  # eager fallback where compiling fails
    mode = "reduce-overhead" if cuda else "default"
    runner = torch.compile(model, mode=mode, dynamic=False)

    def run(x: torch.Tensor) -> torch.Tensor:
        if cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        return runner(x)

    return run
