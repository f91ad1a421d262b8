"""`recon bench-refine`: the speed of modal refinement, against torch's own forward mode.

For each sampling and device: `n` OPDs of Noll 2..J drawn with RMS uniform in
0-`rms_max` nm, their exact frames (float64 engine, no noise), and starts off by
`start_error` x RMS + 5 nm in a random direction (a network's estimate: the basin, not
the answer). Timed at the precision production fits run at (the device's
`HardwarePlan`: float32 fields and Jacobians, float32 products without TF32):

- the modal Jacobian (B, J, L, N, N) in closed form (`FrameModel.modal_jacobian`, the
  dot operator through its low-rank terms), and the same Jacobian by the peer,
  `torch.func.vmap(torch.func.jvp(...))` through the engine: ms/sample and the ratio;
- the whole Levenberg-Marquardt fit (`refine_modal`, as `RefinedEstimator` runs it):
  ms/sample and samples/s, iterations, converged fraction and the residual left [nm].

Results: a printed table and JSON.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.hardware import float32_matmul, hardware_plan
from recon.refine.forward import FrameModel
from recon.refine.modal import refine_modal
from sim.config import load_sim_config
from sim.zernike import zernike_basis

__all__ = ["RefineBenchResult", "bench_refine", "default_json_path", "print_table"]


@dataclass(frozen=True)
class RefineBenchResult:
    """One (npix, device) measurement; times per sample, wall clock."""

    npix: int
    device: str
    samples: int
    batch_size: int
    modes: int
    jacobian_ms: float
    jacobian_peer_ms: float
    jacobian_speedup: float
    jacobian_max_rel_diff: float
    refine_ms: float
    refine_samples_per_s: float
    iterations_median: float
    iterations_max: int
    converged_fraction: float
    residual_median_nm: float
    residual_max_nm: float
    dtype: str = "float32"
    matmul: str = "highest"
    residual_ms_per_iteration: float = float("nan")
    jacobian_ms_per_iteration: float = float("nan")
    solve_ms_per_iteration: float = float("nan")
    evaluations_per_iteration: float = float("nan")
    chunk: int = 0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_ms(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    """Median wall time of fn() [ms] over `repeats` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times)


def _problem(
    npix: int, n: int, rms_max: float, start_error: float, device: torch.device, dtype: torch.dtype
) -> tuple[FrameModel, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The fit's model (`dtype`), basis (J, N, N), truth and start (n, J) [nm RMS], and
    frames from the float64 engine."""
    cfg = load_sim_config("quick").with_overrides(**{"pupil.npix": npix})
    exact = FrameModel(cfg, device, torch.float64)
    model = FrameModel(cfg, device, dtype)
    modes = list(range(2, cfg.aberration.noll_max + 1))
    basis = torch.as_tensor(zernike_basis(modes, npix), device=device)
    g = torch.Generator().manual_seed(0)
    rms = torch.rand(n, generator=g, dtype=torch.float64) * rms_max
    truth = torch.randn(n, len(modes), generator=g, dtype=torch.float64)
    truth = truth / truth.norm(dim=1, keepdim=True) * rms[:, None]
    error = torch.randn(n, len(modes), generator=g, dtype=torch.float64)
    error = error / error.norm(dim=1, keepdim=True) * (start_error * rms[:, None] + 5.0)
    truth, start = truth.to(device), (truth + error).to(device)
    with torch.no_grad():
        frames = torch.cat(
            [
                exact.intensity(torch.einsum("bj,jhw->bhw", truth[a : a + 32], basis))
                for a in range(0, n, 32)
            ]
        )
    return model, basis.to(dtype), truth, start, frames


@torch.no_grad()
def bench_refine_one(
    npix: int,
    device: str | torch.device,
    n: int = 64,
    batch_size: int = 32,
    rms_max: float = 500.0,
    start_error: float = 0.2,
    repeats: int = 3,
    chunk: int | None = None,
) -> RefineBenchResult:
    """Measure the Jacobian (ours and the peer's) and the whole modal fit at `npix`, at the
    device's refinement precision (`HardwarePlan.refine_dtype` and `refine_matmul`) and
    Jacobian chunk (`refine_chunk`, or `chunk` samples; 0: the whole batch)."""
    dev = torch.device(device)
    plan = hardware_plan(dev)
    if chunk is not None:
        plan = dataclasses.replace(plan, refine_chunk=chunk)
    with float32_matmul(plan.refine_matmul):
        return _bench_refine_one(npix, dev, n, batch_size, rms_max, start_error, repeats, plan)


def _bench_refine_one(
    npix: int,
    dev: torch.device,
    n: int,
    batch_size: int,
    rms_max: float,
    start_error: float,
    repeats: int,
    plan: Any,
) -> RefineBenchResult:
    dtype = plan.refine_torch_dtype
    model, basis, truth, start, frames = _problem(npix, n, rms_max, start_error, dev, dtype)
    b = min(batch_size, n)
    opd = torch.einsum("bj,jhw->bhw", start[:b].to(dtype), basis)
    lin = model.linearise(opd)

    def ours() -> torch.Tensor:
        return model.modal_jacobian(lin, basis)

    def peer() -> torch.Tensor:
        def frames_of(x: torch.Tensor) -> torch.Tensor:
            return model.intensity(x)

        def column(v: torch.Tensor) -> torch.Tensor:
            return torch.func.jvp(frames_of, (opd,), (v.expand_as(opd),))[1]

        return torch.func.vmap(column)(basis).transpose(0, 1)  # (B, J, L, N, N)

    jac_ms = _median_ms(ours, dev, repeats) / b
    peer_ms = _median_ms(peer, dev, repeats) / b
    a, p = ours(), peer()
    rel = float((a - p).abs().max() / p.abs().max())
    del a, p

    coeffs, iters, conv, seconds = [], [], [], 0.0
    for a0 in range(0, n, b):
        _sync(dev)
        t0 = time.perf_counter()
        c, rep = refine_modal(
            model, frames[a0 : a0 + b], start[a0 : a0 + b], basis,
            matmul_precision=plan.refine_matmul, chunk=plan.refine_chunk,
        )  # fmt: skip
        _sync(dev)
        seconds += time.perf_counter() - t0
        coeffs.append(c)
        iters.append(rep.iterations)
        conv.append(rep.converged)
    residual = (torch.cat(coeffs) - truth).norm(dim=1).cpu().numpy()  # unit-RMS modes: nm RMS
    it = np.concatenate(iters)
    # the same fits again, each part timed (synchronised: a little slower in all)
    parts: dict[str, float] = {}
    for a0 in range(0, n, b):
        refine_modal(
            model, frames[a0 : a0 + b], start[a0 : a0 + b], basis,
            matmul_precision=plan.refine_matmul, timings=parts, chunk=plan.refine_chunk,
        )  # fmt: skip
    per_it = {k: 1e3 * parts[k] / it.sum() for k in ("residual", "jacobian", "solve")}
    return RefineBenchResult(
        npix, str(dev), n, b, basis.shape[0], jac_ms, peer_ms, peer_ms / jac_ms, rel,
        1e3 * seconds / n, n / seconds, float(np.median(it)), int(it.max()),
        float(np.concatenate(conv).mean()), float(np.median(residual)), float(residual.max()),
        plan.refine_dtype, plan.refine_matmul, per_it["residual"], per_it["jacobian"],
        per_it["solve"], parts["evaluations"] / it.sum(), plan.refine_chunk,
    )  # fmt: skip


def bench_refine(
    sizes: Sequence[int] = (64, 128),
    devices: Sequence[str] | None = None,
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """Every (device, npix) measurement as JSON-able dicts (devices: cpu, and cuda if any)."""
    if devices is None:
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    return [asdict(bench_refine_one(s, d, **kwargs)) for d in devices for s in sizes]


def print_table(rows: Sequence[dict[str, Any]]) -> None:
    """The measurements as a rich table."""
    from rich.table import Table

    from common.cli import console

    dtypes = ", ".join(sorted({f"{r.get('dtype', 'float32')} ({r.get('matmul')})" for r in rows}))
    table = Table(title=f"modal refinement per sample: fields {dtypes}, solve float64")
    columns = ("px", "device", "chunk", "J ms", "func ms", "fit ms", "fits/s", "iter.",
               "conv.", "nm", "res./it", "jac./it", "solve/it", "evals/it")  # fmt: skip
    for col in columns:
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            str(r["npix"]), r["device"], str(r.get("chunk", 0) or "batch"),
            f"{r['jacobian_ms']:.2f}",
            f"{r['jacobian_peer_ms']:.1f}", f"{r['refine_ms']:.1f}",
            f"{r['refine_samples_per_s']:.0f}",
            f"{r['iterations_median']:.0f}/{r['iterations_max']}",
            f"{100 * r['converged_fraction']:.0f}%", f"{r['residual_median_nm']:.0e}",
            f"{r['residual_ms_per_iteration']:.2f}", f"{r['jacobian_ms_per_iteration']:.2f}",
            f"{r['solve_ms_per_iteration']:.2f}", f"{r['evaluations_per_iteration']:.2f}",
        )  # fmt: skip
    console.print(table)
    console.print(
        "chunk: samples per Jacobian product in the fit; J ms: closed-form Jacobian per "
        "sample (the whole batch at once); func ms: the same by torch.func; fit ms: "
        "the whole fit; iter.: median/max; conv.: converged; nm: median residual; "
        "res./jac./solve per it: ms per sample and iteration in the residual (forward "
        "and cost), the Jacobian with J^T W J, and the damped solve; evals/it: cost "
        "evaluations per sample and iteration (1 + rejected steps; + 1 at the start)"
    )


def default_json_path() -> Path:
    """Where `recon bench-refine` writes its JSON by default."""
    return Path("bench") / "refine_bench.json"
