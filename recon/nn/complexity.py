"""Model complexity: parameters, FLOPs (PyTorch's `FlopCounterMode`), latency, throughput."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = [
    "ModelComplexity",
    "count_flops",
    "count_parameters",
    "measure_latency",
    "measure_throughput",
    "profile_model",
]


@dataclass(frozen=True)
class ModelComplexity:
    """Cost of one forward pass of a model on one input shape.

    Attributes:
        params: number of parameters (scalars).
        gflops: floating-point operations of one forward, in 1e9 (a multiply-add counts 2).
        latency_ms: median wall time of one forward, milliseconds.
        throughput_per_s: samples per second (batch size / median latency).
        input_shape: the (B, C, H, W) shape measured.
        device: the device the timings were taken on.
    """

    params: int
    gflops: float
    latency_ms: float
    throughput_per_s: float
    input_shape: tuple[int, ...]
    device: str

    def to_dict(self) -> dict[str, object]:
        """Plain dict (JSON-ready)."""
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        return d


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter scalars (each shared parameter counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode (no BatchNorm statistics update) for the duration; restores the mode."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _example_input(model: nn.Module, input_shape: Sequence[int], device: str) -> torch.Tensor:
    param = next(model.parameters(), None)
    dtype = param.dtype if param is not None else torch.float32
    return torch.randn(*input_shape, device=device, dtype=dtype)


def count_flops(model: nn.Module, input_shape: Sequence[int], device: str = "cpu") -> int:
    """FLOPs of one forward pass in eval mode on a random input of `input_shape`.

    Counted by `torch.utils.flop_counter.FlopCounterMode`: matrix products, convolutions and
    attention, 2 FLOPs per multiply-add; elementwise ops, norms and pooling are not counted.
    """
    model = model.to(device)
    x = _example_input(model, input_shape, device)
    counter = FlopCounterMode(display=False)
    with _eval_mode(model), torch.no_grad(), counter:
        model(x)
    return int(counter.get_total_flops())


def _synchronize(device: str | torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def measure_latency(
    model: nn.Module,
    input_shape: Sequence[int],
    device: str = "cpu",
    warmup: int = 3,
    repeats: int = 10,
) -> float:
    """Median wall time of one forward pass in eval mode without autograd, milliseconds.

    Each of `repeats` timed calls is synchronised on CUDA devices; `warmup` untimed calls
    come first (allocator, cuDNN autotuning, lazy init).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    model = model.to(device)
    x = _example_input(model, input_shape, device)
    times_ms: list[float] = []
    with _eval_mode(model), torch.inference_mode():
        for _ in range(warmup):
            model(x)
        for _ in range(repeats):
            _synchronize(device)
            start = time.perf_counter()
            model(x)
            _synchronize(device)
            times_ms.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times_ms)


def measure_throughput(
    model: nn.Module,
    input_shape: Sequence[int],
    device: str = "cpu",
    warmup: int = 3,
    repeats: int = 10,
) -> float:
    """Samples per second at batch size ``input_shape[0]``, from the median latency."""
    latency_ms = measure_latency(model, input_shape, device, warmup, repeats)
    return input_shape[0] / (latency_ms * 1e-3)


def profile_model(
    model: nn.Module,
    input_shape: Sequence[int],
    device: str = "cpu",
    warmup: int = 3,
    repeats: int = 10,
) -> ModelComplexity:
    """Parameters, GFLOPs and median latency / throughput of `model` at `input_shape`."""
    latency_ms = measure_latency(model, input_shape, device, warmup, repeats)
    return ModelComplexity(
        params=count_parameters(model),
        gflops=count_flops(model, input_shape, device) / 1e9,
        latency_ms=latency_ms,
        throughput_per_s=input_shape[0] / (latency_ms * 1e-3),
        input_shape=tuple(input_shape),
        device=str(device),
    )
