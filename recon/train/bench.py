"""`recon bench`: training samples/s and single-frame inference latency of phenn and gru.

For each architecture (its `configs/recon/<arch>.yaml` widths unless another config is
given), each sampling (64 and 128 px) and each device (the CPU in float32; a CUDA GPU in
bf16 autocast when one is present): random inputs of the four default wavelengths,
AdamW steps on the OPD loss for the training rate, batch-1 forward passes in eval mode
for the latency (the median). Results: a printed table and JSON.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from recon.losses import OPDLoss
from recon.models import NormStats, build_model
from recon.nn.complexity import count_parameters
from recon.train.config import TrainConfig, load_train_config

__all__ = ["BenchResult", "bench_one", "run_bench"]

N_WAVELENGTHS = 4  # the default system: 0.96, 0.98, 1.00, 1.20 um


@dataclass(frozen=True)
class BenchResult:
    """One (arch, npix, device) measurement."""

    arch: str
    npix: int
    device: str
    precision: str
    params: int
    batch_size: int
    train_samples_per_s: float
    infer_latency_ms: float
    compiled: bool = False
    infer_batch: int = 0
    infer_frames_per_s: float = 0.0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def _autocast(device: torch.device, precision: str) -> Iterator[None]:
    if precision == "bf16-mixed":
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
    else:
        yield


def _time_train(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int,
    precision: str,
    compile_model: bool = False,
) -> float:
    """Samples per second of full training steps (forward, loss, backward, AdamW), with
    what `recon train` does on the device: channels_last, fused AdamW, torch.compile."""
    from recon.train.module import compiled

    cuda = x.device.type == "cuda"
    loss_fn = OPDLoss()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=cuda or None)
    model.train()
    if cuda:
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    run = compiled(model) if compile_model else model
    times: list[float] = []
    warmup = 3 if compile_model else 1  # compiling happens in the first steps
    for i in range(steps + warmup):
        _sync(x.device)
        t0 = time.perf_counter()
        with _autocast(x.device, precision):
            loss = loss_fn(run(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync(x.device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return x.shape[0] / statistics.median(times)


@torch.inference_mode()
def _time_infer(run: Any, frames: torch.Tensor, repeats: int, precision: str) -> float:
    """Median time [ms] of one forward pass on frames (B, L, H, W)."""
    times: list[float] = []
    with _autocast(frames.device, precision):
        for i in range(repeats + 3):  # warm-ups (CUDA-graph capture happens there)
            _sync(frames.device)
            t0 = time.perf_counter()
            run(frames)
            _sync(frames.device)
            if i >= 3:
                times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def bench_one(
    cfg: TrainConfig,
    npix: int,
    device: str,
    batch_size: int,
    steps: int,
    repeats: int,
    compile_model: bool | None = None,
    infer_batch: int | None = None,
) -> BenchResult:
    """Measure `cfg.arch` at `npix` on `device` (bf16 autocast on CUDA, float32 on CPU).

    Training as `recon train` runs it; inference through `recon.models.fast` (CUDA graphs
    on a GPU): batch-1 latency and frames/s at `infer_batch` (default 1024 on a GPU, 16
    on the CPU). compile_model None: on for CUDA, off on the CPU.
    """
    from recon.models.fast import inference_runner

    dev = torch.device(device)
    precision = "bf16-mixed" if dev.type == "cuda" else "32"
    use_compile = compile_model if compile_model is not None else dev.type == "cuda"
    infer_batch = infer_batch or (1024 if dev.type == "cuda" else 16)
    stats = NormStats((1.0,) * N_WAVELENGTHS, (0.3,) * N_WAVELENGTHS, 250.0, 1)
    torch.manual_seed(0)
    model = build_model(cfg.arch, cfg.kwargs, N_WAVELENGTHS, stats).to(dev)
    x = torch.rand(batch_size, N_WAVELENGTHS, npix, npix, device=dev) * 2
    y = torch.randn(batch_size, 1, npix, npix, device=dev) * 250.0
    rate = _time_train(model, x, y, steps, precision, use_compile)
    torch.manual_seed(0)
    fresh = build_model(cfg.arch, cfg.kwargs, N_WAVELENGTHS, stats).to(dev)
    run = inference_runner(fresh, dev, use_compile)
    latency = _time_infer(run, x[:1], repeats, precision)
    frames = torch.rand(infer_batch, N_WAVELENGTHS, npix, npix, device=dev) * 2
    batch_ms = _time_infer(run, frames, max(3, repeats // 3), precision)
    return BenchResult(
        cfg.arch, npix, str(dev), precision, count_parameters(model), batch_size, rate,
        latency, use_compile, infer_batch, infer_batch / (batch_ms / 1e3),
    )  # fmt: skip


def run_bench(
    archs: Sequence[str] = ("phenn", "gru"),
    sizes: Sequence[int] = (64, 128),
    config: str | None = None,
    batch_size: int = 16,
    steps: int = 3,
    repeats: int = 10,
    devices: Sequence[str] | None = None,
    compile_model: bool | None = None,
) -> list[dict[str, Any]]:
    """Every (device, arch, npix) measurement as JSON-able dicts.

    Args:
        config: training config name or path for the widths (None: each arch's own file).
        devices: torch devices (None: "cpu", plus "cuda" when available).
    """
    if devices is None:
        devices = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
    rows = []
    for device in devices:
        for arch in archs:
            base = load_train_config(config or arch).with_overrides(arch=arch)
            for npix in sizes:
                result = bench_one(base, npix, device, batch_size, steps, repeats, compile_model)
                rows.append(asdict(result))
    return rows


def print_table(rows: Sequence[dict[str, Any]]) -> None:
    """Rich table of `run_bench` rows."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="recon bench (4 wavelengths)")
    for col in (
        "arch",
        "npix",
        "device",
        "precision",
        "params",
        "batch",
        "compiled",
        "train samples/s",
        "1-frame latency (ms)",
        "batched frames/s",
    ):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            r["arch"],
            str(r["npix"]),
            r["device"],
            r["precision"],
            f"{r['params']:,}",
            str(r["batch_size"]),
            "yes" if r.get("compiled") else "no",
            f"{r['train_samples_per_s']:.1f}",
            f"{r['infer_latency_ms']:.2f}",
            f"{r.get('infer_frames_per_s', 0):,.0f} (batch {r.get('infer_batch', 0)})",
        )
    Console().print(table)


def default_json_path() -> Path:
    """Where `recon bench` writes its JSON by default."""
    return Path("bench") / "recon_bench.json"
