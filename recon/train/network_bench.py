"""`recon bench`: training samples/s and single-frame inference latency of phenn and gru.

For each architecture (its `configs/recon/<arch>.yaml` widths unless another config is
given), each sampling (64 and 128 px) and each device, under the device's hardware plan
(`common.hardware`): random inputs of the four default wavelengths; training steps
timed through the same Lightning step as `recon train` (`LitRecon`, the Trainer's
precision and clipping, the plan's fused AdamW, channels_last and torch.compile), and
batch-1 forward passes of the inference runner (`recon.models.fast`, float32, CUDA
graphs on a GPU) for the latency (the median). Whether compilation really happened is
reported for both (graphs compiled, or the fallback's reason). Results: a printed table
and JSON.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from common.hardware import HardwarePlan, hardware_plan
from recon.models import NormStats, build_model
from recon.nn.complexity import count_parameters
from recon.train.config import TrainConfig, load_train_config

__all__ = ["BenchResult", "bench_one", "run_bench", "time_lightning_steps"]

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
    train_compile: dict[str, Any] = field(default_factory=dict)
    infer_compile: dict[str, Any] = field(default_factory=dict)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _StepTimer(pl.Callback):
    """Wall time of each whole training step (forward, loss, backward, clip, optimizer)."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.times = warmup, []
        self._t0 = 0.0

    def on_train_batch_start(self, trainer: pl.Trainer, module: Any, batch: Any, i: int) -> None:
        _sync(module.device)
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, module: Any, *args: Any) -> None:
        _sync(module.device)
        if trainer.global_step > self.warmup:
            self.times.append(time.perf_counter() - self._t0)


class _Repeat:
    """One batch, `n` times: a training loader with no data-loading cost."""

    def __init__(self, batch: tuple[torch.Tensor, ...], n: int) -> None:
        self.batch, self.n = batch, n

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Any:
        return iter([self.batch] * self.n)


def time_lightning_steps(
    cfg: TrainConfig,
    model: torch.nn.Module,
    batch: tuple[torch.Tensor, torch.Tensor],
    steps: int,
    plan: HardwarePlan,
    warmup: int | None = None,
) -> tuple[float, dict[str, Any]]:
    """Samples/s of `recon train`'s own step on one batch (B, L, H, W), (B, 1, H, W) [nm],
    repeated; and what the steps ran (`LitRecon.compile_status`).

    Timed after `warmup` steps (default 3 when compiling: the graphs are built there).
    """
    from recon.train.module import LitRecon
    from recon.train.trainer import hardware_kwargs

    warmup = warmup if warmup is not None else (3 if plan.compile else 1)
    npix = batch[0].shape[-1]
    lit = LitRecon(cfg, model, torch.ones(npix, npix), {}, plan)
    timer = _StepTimer(warmup)
    hardware = hardware_kwargs(cfg.with_overrides(devices=1, num_nodes=1), plan)
    trainer = pl.Trainer(
        **hardware, max_steps=warmup + steps, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
        callbacks=[timer],
    )  # fmt: skip
    trainer.fit(lit, train_dataloaders=_Repeat(batch, warmup + steps))
    return batch[0].shape[0] / statistics.median(timer.times), lit.compile_status


@torch.inference_mode()
def _time_infer(run: Any, frames: torch.Tensor, repeats: int) -> float:
    """Median time [ms] of one forward pass on frames (B, L, H, W)."""
    times: list[float] = []
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
    plan: HardwarePlan | None = None,
) -> BenchResult:
    """Measure `cfg.arch` at `npix` on `device` under the device's hardware plan.

    Training through `time_lightning_steps` (the run's own step); inference through
    `recon.models.fast` (CUDA graphs on a GPU): batch-1 latency and frames/s at
    `infer_batch` (default 1024 on a GPU, 16 on the CPU). compile_model None: the plan's
    (on for CUDA, off on the CPU). plan: another device's plan run on this one (the CUDA
    plan on a CPU: `scripts/gpu_bench.sh --smoke`).
    """
    from recon.models.fast import InferenceRunner

    dev = torch.device(device)
    plan = plan if plan is not None else hardware_plan(dev, compile=compile_model)
    accelerator = "gpu" if dev.type == "cuda" else dev.type
    run_cfg = cfg.with_overrides(accelerator=accelerator, batch_size=batch_size)
    infer_batch = infer_batch or (1024 if dev.type == "cuda" else 16)
    stats = NormStats((1.0,) * N_WAVELENGTHS, (0.3,) * N_WAVELENGTHS, 250.0, 1)
    torch.manual_seed(0)
    model = build_model(cfg.arch, cfg.kwargs, N_WAVELENGTHS, stats)
    x = torch.rand(batch_size, N_WAVELENGTHS, npix, npix, device=dev) * 2
    y = torch.randn(batch_size, 1, npix, npix, device=dev) * 250.0
    rate, train_status = time_lightning_steps(run_cfg, model, (x, y), steps, plan)
    torch.manual_seed(0)
    fresh = build_model(cfg.arch, cfg.kwargs, N_WAVELENGTHS, stats).to(dev)
    run = InferenceRunner(fresh, plan)
    latency = _time_infer(run, x[:1], repeats)
    frames = torch.rand(infer_batch, N_WAVELENGTHS, npix, npix, device=dev) * 2
    batch_ms = _time_infer(run, frames, max(3, repeats // 3))
    infer_status = run.status()
    return BenchResult(
        cfg.arch, npix, str(dev), plan.precision, count_parameters(model), batch_size, rate,
        latency, bool(train_status["compiled"]), infer_batch, infer_batch / (batch_ms / 1e3),
        train_status, infer_status,
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
    """Rich table of `run_bench` rows (80 columns), then what compiled, one line a row."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="recon bench: 4 wavelengths; training as recon train runs it")
    for col in ("arch", "px", "device", "prec.", "params", "batch", "train/s", "lat. ms",
                "frames/s"):  # fmt: skip
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            r["arch"], str(r["npix"]), r["device"], r["precision"], f"{r['params'] / 1e6:.2f} M",
            str(r["batch_size"]), f"{r['train_samples_per_s']:.1f}",
            f"{r['infer_latency_ms']:.2f}", f"{r.get('infer_frames_per_s', 0):,.0f}",
        )  # fmt: skip
    console.print(table)
    console.print("train/s: training samples/s; lat. ms: batch-1 inference latency; "
                  "frames/s: inference at the batch in the JSON (infer_batch)")  # fmt: skip
    for r in rows:
        console.print(f"compiled, {r['arch']} {r['npix']} px {r['device']}: {_compiled_text(r)}")


def _compiled_text(row: dict[str, Any]) -> str:
    """What ran in training, then in inference: "3 graphs", "eager (not asked)", or
    "eager after a failure: <reason>"."""

    def one(status: dict[str, Any]) -> str:
        if not status.get("requested"):
            return "eager (not asked)"
        if status.get("fallback"):
            return f"eager after a failure: {status['fallback']}"
        return f"{status.get('graphs', 0)} graphs"

    train, infer = one(row.get("train_compile", {})), one(row.get("infer_compile", {}))
    return f"training {train}; inference {infer}"


def default_json_path() -> Path:
    """Where `recon bench` writes its JSON by default."""
    return Path("bench") / "recon_bench.json"
