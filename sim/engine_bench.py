"""`sim bench`: the batched engine against POPPY (and hcipy) on the same wavefronts.

Every peer runs with the same thread count (default 1), so samples per second per
core compare directly; a sample is one wavefront at every configured wavelength. Each
peer is timed `repeats` times, alternating, and its best time kept (the machine's other
jobs only ever slow a run down). The engine runs twice: "engine" is its default path (the
low-rank dot in float32), "engine-mft" the exact separable MFT.
Accuracy is each peer's largest error against a converged reference (q = 256),
against POPPY at the same sampling and against the engine's separable MFT, relative to
the peak intensity, on the first few wavefronts.
"""

from __future__ import annotations

import contextlib
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from common.errors import KnownError
from sim.aberrations import sample_opd
from sim.check import converged_config
from sim.config import SimConfig
from sim.mask import dot_phase_rad
from sim.poppy_ref import PoppyZWFS
from sim.zwfs import ZWFSModel

__all__ = ["BenchRow", "run_bench", "run_generate_bench"]


class BenchRequestError(KnownError, ValueError):
    """A benchmark request that cannot run (a count below one)."""


@dataclass
class BenchRow:
    """Throughput and accuracy of one peer."""

    peer: str
    samples: int
    seconds: float
    samples_per_s_per_core: float
    ms_per_wavefront_wavelength: float
    speedup_vs_poppy: float | None
    max_err_vs_converged: float
    max_err_vs_poppy: float
    max_err_vs_mft: float


@contextlib.contextmanager
def limited_threads(n: int) -> Iterator[None]:
    """Limit torch, BLAS (threadpoolctl) and numexpr to `n` threads inside the block."""
    from threadpoolctl import threadpool_limits

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        import numexpr

        old_ne = numexpr.set_num_threads(n)
    except ImportError:
        numexpr, old_ne = None, None
    try:
        with threadpool_limits(n):
            yield
    finally:
        torch.set_num_threads(old)
        if numexpr is not None:
            numexpr.set_num_threads(old_ne)


def _timed(run: Callable[[], np.ndarray]) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    out = run()
    return out, time.perf_counter() - start


def _output(n: int, cfg: SimConfig) -> np.ndarray:
    """Pre-faulted result array (n, L, N, N): every peer writes into memory that exists."""
    out = np.empty((n, len(cfg.wavelengths_um), cfg.pupil.npix, cfg.pupil.npix), np.float32)
    out.fill(0)
    return out


def _engine_runner(
    cfg: SimConfig, opd: torch.Tensor, batch: int, dot: str = "auto"
) -> Callable[[], np.ndarray]:
    model = ZWFSModel(cfg, dot=dot)
    opd32 = opd.to(model.real_dtype)
    out = _output(len(opd32), cfg)

    def run() -> np.ndarray:
        with torch.inference_mode():
            for i in range(0, len(opd32), batch):
                out[i : i + batch] = model(opd32[i : i + batch]).numpy()
        return out

    with torch.inference_mode():
        model(opd32[:batch])  # warm-up: allocations, thread pools
    return run


def _poppy_runner(cfg: SimConfig, opd: torch.Tensor) -> Callable[[], np.ndarray]:
    ref = PoppyZWFS(cfg)
    maps = opd.double().numpy()
    out = _output(len(maps), cfg)

    def run() -> np.ndarray:
        for i, m in enumerate(maps):
            for li, w in enumerate(cfg.wavelengths_um):
                out[i, li] = ref.intensity(m, w)
        return out

    ref.intensity(maps[0], cfg.wavelengths_um[0])  # warm-up
    return run


def _hcipy_runner(cfg: SimConfig, opd: torch.Tensor) -> Callable[[], np.ndarray] | None:
    """hcipy's ZWFS optics, one per wavelength so that the dot phase is chromatic."""
    try:
        import hcipy
    except ImportError:
        return None
    npix, diam = cfg.pupil.npix, cfg.pupil.diameter_m
    grid = hcipy.make_pupil_grid(npix, diam)
    model = ZWFSModel(cfg)
    amplitude = model.amplitude.double().numpy()  # the same grey pupil, clear-pupil normalised
    dot_samples = round(cfg.mask.diameter_lambda0_d * cfg.focal.samples_per_lambda0_d)
    optics = [
        hcipy.ZernikeWavefrontSensorOptics(
            grid,
            phase_step=theta,
            phase_dot_diameter=cfg.mask.diameter_lambda0_d,
            num_pix=dot_samples,
            pupil_diameter=diam,
            reference_wavelength=cfg.mask.lambda0_um * 1e-6,
        )
        for theta in dot_phase_rad(cfg.wavelengths_um, cfg.mask)
    ]
    maps = opd.double().numpy()

    def one(m: np.ndarray) -> np.ndarray:
        frames = []
        for w_um, zwfs in zip(cfg.wavelengths_um, optics, strict=True):
            phase = 2 * np.pi * m / (w_um * 1e3)
            field = hcipy.Field((amplitude * np.exp(1j * phase)).ravel(), grid)
            out = zwfs.forward(hcipy.Wavefront(field, w_um * 1e-6))
            frames.append(np.asarray(out.intensity).reshape(npix, npix))
        return np.stack(frames)

    out = _output(len(maps), cfg)

    def run() -> np.ndarray:
        for i, m in enumerate(maps):
            out[i] = one(m)
        return out

    one(maps[0])  # warm-up
    return run


def run_bench(
    cfg: SimConfig,
    n_engine: int = 256,
    n_reference: int = 8,
    batch: int = 8,
    threads: int = 1,
    n_accuracy: int = 4,
    seed: int = 0,
    repeats: int = 3,
) -> tuple[list[BenchRow], dict]:
    """Time the engine (both dot paths), POPPY and hcipy (if installed) on the same
    wavefronts, each the best of `repeats` alternating runs."""
    checks = (("n", n_engine), ("n_reference", n_reference), ("batch", batch), ("repeats", repeats))
    for name, value in checks:
        if value < 1:
            raise BenchRequestError(f"{{{name}}} must be at least 1, got {value}")
    n_accuracy = min(n_accuracy, n_reference, n_engine)
    model = ZWFSModel(cfg)
    rms = list(np.linspace(cfg.aberration.rms_min_nm, cfg.aberration.rms_max_nm, n_engine))
    opd = sample_opd(cfg.aberration, model.basis().double(), model.mask, rms, seed)
    with torch.inference_mode():
        truth = ZWFSModel(converged_config(cfg))(opd[:n_accuracy]).numpy()
    n_lambda = len(cfg.wavelengths_um)
    results: dict[str, tuple[int, float, np.ndarray]] = {}
    with limited_threads(threads):
        runners = {
            "engine": (_engine_runner(cfg, opd, batch), n_engine),
            "engine-mft": (_engine_runner(cfg, opd, batch, "exact"), n_engine),
            "poppy": (_poppy_runner(cfg, opd[:n_reference]), n_reference),
        }
        hc = _hcipy_runner(cfg, opd[:n_reference])
        if hc is not None:
            runners["hcipy"] = (hc, n_reference)
        for _ in range(repeats):
            for name, (run, n) in runners.items():
                out, seconds = _timed(run)
                if name not in results or seconds < results[name][1]:
                    results[name] = (n, seconds, out.copy())
    poppy_rate = results["poppy"][0] / results["poppy"][1] / threads
    peak = truth.max(axis=(-2, -1), keepdims=True)

    def max_err(out: np.ndarray, peer: str) -> float:
        return float((np.abs(out[:n_accuracy] - results[peer][2][:n_accuracy]) / peak).max())

    rows = []
    for name, (n, seconds, out) in results.items():
        rate = n / seconds / threads
        err = np.abs(out[:n_accuracy] - truth) / peak
        rows.append(
            BenchRow(
                peer=name,
                samples=n,
                seconds=seconds,
                samples_per_s_per_core=rate,
                ms_per_wavefront_wavelength=seconds / (n * n_lambda) * 1e3 * threads,
                speedup_vs_poppy=rate / poppy_rate,
                max_err_vs_converged=float(err.max()),
                max_err_vs_poppy=max_err(out, "poppy"),
                max_err_vs_mft=max_err(out, "engine-mft"),
            )
        )
    low_rank = ZWFSModel(cfg, dot="low_rank")
    terms = low_rank.low_rank_terms()[0].shape[1]
    meta = {
        "npix": cfg.pupil.npix,
        "wavelengths_um": cfg.wavelengths_um,
        "precision": cfg.precision,
        "focal_samples_per_lambda0_d": cfg.focal.samples_per_lambda0_d,
        "threads": threads,
        "batch": batch,
        "repeats": repeats,
        "low_rank_terms": terms,
        "low_rank_first_dropped": low_rank.low_rank_dropped,
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "rows": [asdict(r) for r in rows],
    }
    return rows, meta


def _h5py_floor(arrays: dict[str, np.ndarray], path: Path, batch: int) -> float:
    """Seconds to write the same per-sample arrays with plain h5py, batch by batch (the floor)."""
    import h5py

    start = time.perf_counter()
    with h5py.File(path, "w") as f:
        dsets = {k: f.create_dataset(k, shape=v.shape, dtype=v.dtype) for k, v in arrays.items()}
        n = len(arrays["rms"])
        for a in range(0, n, batch):
            for k, v in arrays.items():
                dsets[k][a : a + batch] = v[a : a + batch]
    return time.perf_counter() - start


def run_generate_bench(
    cfg: SimConfig, n: int, folder: Path, batch: int = 16, device: str = "cpu", n_poppy: int = 2
) -> dict:
    """`sim generate` end to end against writing the same arrays with h5py alone."""
    import h5py

    from sim.generate import generate_dataset

    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "bench_generate.h5"
    start = time.perf_counter()
    generate_dataset(cfg, target, n, batch_size=batch, device=device, overwrite=True)
    t_generate = time.perf_counter() - start
    with h5py.File(target, "r") as f:
        arrays = {k: f[k][...] for k in ("intensity", "opd", "coefficients", "rms")}
    size = target.stat().st_size
    t_floor = _h5py_floor(arrays, folder / "bench_floor.h5", batch)
    ref = PoppyZWFS(cfg)
    maps = arrays["opd"][:n_poppy].astype(np.float64)
    start = time.perf_counter()
    for m in maps:
        for w in cfg.wavelengths_um:
            ref.intensity(m, w)
    t_poppy_sample = (time.perf_counter() - start) / n_poppy
    for p in (target, folder / "bench_floor.h5"):
        p.unlink(missing_ok=True)
    return {
        "n": n,
        "npix": cfg.pupil.npix,
        "wavelengths_um": cfg.wavelengths_um,
        "file_gb": size / 1e9,
        "generate_s": t_generate,
        "h5py_floor_s": t_floor,
        "ratio_to_floor": t_generate / t_floor,
        "samples_per_s": n / t_generate,
        "poppy_projected_s": t_poppy_sample * n,
        "device": device,
        "torch_threads": torch.get_num_threads(),
    }
