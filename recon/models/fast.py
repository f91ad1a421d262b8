"""Inference at AO-loop speed: a model prepared for one device (plain torch only).

What runs follows the device's `common.hardware.HardwarePlan`: on CUDA, channels_last
and `torch.compile(mode="reduce-overhead")`, which captures the forward pass in CUDA
graphs (one launch per call instead of one per kernel: what batch-1 latency is made of);
on the CPU the model runs eagerly unless asked otherwise. Compiling that fails falls
back to eager execution with its reason (`InferenceRunner.status`). Inference is float32
on every device (a measurement: bf16 would round a 500 nm OPD to about 2 nm).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from common.compiled import CompiledModule, compile_status
from common.hardware import HardwarePlan, hardware_plan

__all__ = ["InferenceRunner", "inference_runner"]


class InferenceRunner:
    """``runner(frames (B, L, H, W)) -> model output`` as the plan says to run it."""

    def __init__(self, model: nn.Module, plan: HardwarePlan) -> None:
        self.model, self.plan = model.eval(), plan
        if plan.channels_last:
            model.to(memory_format=torch.channels_last)
        mode = "reduce-overhead" if plan.cuda_graphs else None
        self._run: Any = CompiledModule(model, mode=mode) if plan.compile else model

    def __call__(self, x: torch.Tensor) -> Any:
        if self.plan.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self._run(x)

    def status(self) -> dict[str, Any]:
        """Whether the calls so far ran compiled graphs (`CompiledModule.status`)."""
        return compile_status(self._run)


def inference_runner(
    model: nn.Module, device: torch.device | str, compile_model: bool | None = None
) -> InferenceRunner:
    """A runner for `model` (already on `device`) under the device's hardware plan.

    Args:
        compile_model: compile (with CUDA graphs on a GPU); None: the plan's choice (on
            for CUDA, off on the CPU).
    """
    return InferenceRunner(model, hardware_plan(device, compile=compile_model))
