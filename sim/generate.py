"""`sim generate`: stream simulated batches into a dataset file, resumable and scalable.

Sample i of a split depends only on (seed, split, i): its aberration comes from its
own generator, its map from its own float64 product, its noise from its own
generator, and batches start at multiples of the batch size, so a resumed run, a
run split over processes (shards) or over a Dask cluster, writes the same samples.
"""

from __future__ import annotations

import glob
import itertools
import json
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.errors import KnownError
from data.conventions import CONVENTIONS
from data.shards import combine_shards, shard_path
from data.writer import DatasetWriter, check_free_space, estimate_size_bytes, part_paths
from sim.aberrations import stream_id
from sim.config import SimConfig
from sim.samples import (
    file_illumination,
    optional_variables,
    reference_frames,
    segment_count,
    simulate_batch,
)
from sim.zwfs import ZWFSModel

__all__ = [
    "ENGINES",
    "ENGINE_NAME",
    "SPLITS",
    "GenerateJob",
    "GenerationPlan",
    "RequestError",
    "generate_dataset",
    "plan_generation",
    "resolve_device",
    "run_generation",
]

ENGINES = {
    "fast": "zwfs.sim.ZWFSModel (batched semi-analytic Babinet MFT, PyTorch)",
    "poppy": "poppy SemiAnalyticCoronagraph (zwfs.sim.poppy_ref.PoppyZWFS, one frame per call)",
}
"""`sim generate --engine`: the name written into each file's ``engine`` attribute."""
ENGINE_NAME = ENGINES["fast"]
SPLITS = ("train", "val", "test")
ProgressFn = Callable[[int], None]
LOW_RANK_MIN_SAMPLES = 1000
"""Files of at least this many samples run the engine's low-rank dot (`ZWFSModel` dot
"auto"), smaller ones the separable MFT: building the low-rank terms (0.1-0.3 s) pays
for itself after ~300 samples at 128 px and ~1000 at 64 px. A function of the file's
size only, so that a resumed or sharded file runs the path an uninterrupted one does."""


class RequestError(KnownError, ValueError):
    """A generation request that cannot run (bad size, split, path or device)."""


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when available else 'cpu'; 'cuda' without a GPU is an error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RequestError("{device} cuda asked for, but torch sees no CUDA device")
    if device != "cpu" and not device.startswith("cuda"):
        raise RequestError(f"{{device}} must be cpu, cuda or auto, got '{device}'")
    return device


@dataclass(frozen=True)
class GenerateJob:
    """One writer's share of a split: samples [start, stop) into `path`."""

    cfg_json: str
    path: str
    n_total: int
    start: int
    stop: int
    split: str
    seed: int
    batch_size: int
    device: str
    overwrite: bool
    resume: bool
    threads: int | None = None
    fsync: bool = False
    engine: str = "fast"

    @property
    def cfg_model(self) -> SimConfig:
        """The simulation config (jobs carry it as JSON so they pickle to any process)."""
        return SimConfig.model_validate_json(self.cfg_json)


def _attrs(cfg: SimConfig, split: str, seed: int, engine: str, device: str) -> dict:
    """Root attributes; `device` (its type) enters the resume fingerprint."""
    kind = torch.device(device).type
    return {
        "config": cfg.model_dump_json(indent=1),
        "engine": ENGINES[engine],
        "seed": int(seed),
        "split": split,
        "device": kind,
        "device_name": torch.cuda.get_device_name(device) if kind == "cuda" else "cpu",
        "title": "ZWFS simulated dataset",
        "conventions": json.dumps(CONVENTIONS),
    }


def _batches(start: int, stop: int, batch_size: int) -> list[tuple[int, int]]:
    """Batch ranges inside [start, stop) on the global grid of multiples of batch_size."""
    edges = sorted({start, stop, *range((start // batch_size + 1) * batch_size, stop, batch_size)})
    return list(itertools.pairwise(edges))


def run_job(job: GenerateJob, progress: ProgressFn | None = None) -> str:
    """Write (or finish) one file of samples [start, stop); returns its path."""
    if job.threads:
        torch.set_num_threads(job.threads)
    cfg = job.cfg_model
    dot = "auto" if job.n_total >= LOW_RANK_MIN_SAMPLES else "exact"
    model = ZWFSModel(cfg, device=job.device, dot=dot)
    optics = None if job.engine == "fast" else _PoppyOptics(cfg)
    basis = model.basis()
    stream = stream_id(job.split)
    illumination = file_illumination(model, job.seed, stream)
    with DatasetWriter(
        job.path,
        n_samples=job.stop - job.start,
        sample_offset=job.start,
        wavelengths_m=cfg.wavelengths_m,
        modes=cfg.aberration.modes,
        npix=cfg.pupil.npix // cfg.detector.binning,
        pixel_scale_m=cfg.pixel_scale_m * cfg.detector.binning,
        attrs=_attrs(cfg, job.split, job.seed, job.engine, job.device),
        overwrite=job.overwrite,
        resume=job.resume,
        durable=job.fsync,
        optional=optional_variables(cfg),
        segments=segment_count(cfg),
    ) as writer:
        if progress:
            progress(writer.n_complete)
        if not writer.static_written:
            with torch.inference_mode():
                clear, zwfs = reference_frames(model, illumination)
                writer.write_static(
                    pupil=_binned_pupil(model),
                    reference_clear=clear.float().cpu().numpy(),
                    reference_zwfs=_reference_zwfs(model, optics, zwfs),
                )
        # One writer thread: HDF5 writes of batch k overlap the optics of batch k + 1.
        with ThreadPoolExecutor(max_workers=1) as io:
            pending: Future | None = None
            for a, b in _batches(writer.next_sample, job.stop, job.batch_size):
                with torch.inference_mode():
                    arrays = simulate_batch(
                        model, np.arange(a, b), job.seed, stream, basis, job.n_total, optics,
                        illumination,
                    ).arrays()  # fmt: skip
                if pending is not None:
                    pending.result()  # at most one batch in flight: bounded memory
                pending = io.submit(writer.write_batch, a, **arrays)
                if progress:
                    pending.add_done_callback(lambda _f, k=b - a: progress(k))
            if pending is not None:
                pending.result()
        writer.finalize()
    return job.path


class _PoppyOptics:
    """POPPY's own ZWFS as the optics of `sim generate --engine poppy`: one frame per call.

    The same call as `ZWFSModel`: OPD (B, N, N) [nm] -> normalised frames (B, L, N/b, N/b).
    """

    def __init__(self, cfg: SimConfig) -> None:
        from sim.poppy_ref import PoppyZWFS  # the only path of `sim generate` to POPPY

        self.cfg = cfg
        self.reference = PoppyZWFS(cfg)

    def __call__(self, opd_nm: torch.Tensor) -> torch.Tensor:
        maps = opd_nm.detach().double().cpu().numpy()
        frames = [[self.reference.intensity(m, w) for w in self.cfg.wavelengths_um] for m in maps]
        return torch.as_tensor(np.asarray(frames))


def _reference_zwfs(
    model: ZWFSModel, optics: Callable | None, engine_frames: torch.Tensor
) -> np.ndarray:
    """The unaberrated ZWFS frames (L, N/b, N/b): the engine's, or through POPPY."""
    if optics is None:
        return engine_frames.float().cpu().numpy()
    return optics(torch.zeros_like(model.pupil)[None])[0].float().cpu().numpy()


def _binned_pupil(model: ZWFSModel) -> np.ndarray:
    from sim.detector import bin_frames

    return bin_frames(model.pupil, model.cfg.detector.binning).float().cpu().numpy()


@dataclass(frozen=True)
class GenerationPlan:
    """A checked request: what `run_generation` writes, and its estimated size."""

    cfg: SimConfig
    out: Path
    n: int
    split: str
    seed: int
    batch_size: int
    device: str
    overwrite: bool
    resume: bool
    workers: int
    scheduler: str | None
    fsync: bool
    size_bytes: int
    engine: str = "fast"
    fresh_resume: bool = False  # --resume found no partial run: it starts one


def plan_generation(
    cfg: SimConfig,
    out: Path,
    n: int,
    *,
    split: str = "train",
    seed: int | None = None,
    batch_size: int = 16,
    device: str = "auto",
    overwrite: bool = False,
    resume: bool = False,
    workers: int = 1,
    scheduler: str | None = None,
    fsync: bool = False,
    engine: str = "fast",
) -> GenerationPlan:
    """Check a request before anything is written (one-line `RequestError`s)."""
    out = Path(out)
    if n <= 0:
        raise RequestError(f"{{n}} must be a positive number of samples, got {n}")
    if split not in SPLITS:
        raise RequestError(f"unknown split '{split}': use one of {', '.join(SPLITS)}")
    if workers < 1 or workers > n:
        raise RequestError(f"{{workers}} must lie in [1, n = {n}], got {workers}")
    if out.suffix not in (".h5", ".hdf5", ".nc"):
        raise RequestError(f"output {out} should end in .h5 (HDF5, netCDF4-compatible)")
    if batch_size < 1:
        raise RequestError(f"{{batch_size}} must be >= 1, got {batch_size}")
    if engine not in ENGINES:
        raise RequestError(f"unknown {{engine}} {engine!r}: use one of {', '.join(ENGINES)}")
    if out.exists() and not (overwrite or resume):
        raise RequestError(f"{out} already exists; use {{overwrite}} to replace it")
    fresh_resume = resume and not out.exists() and not _partial_run_exists(out)
    resume = resume and not fresh_resume  # nothing to resume: start the run
    npix = cfg.pupil.npix // cfg.detector.binning
    if engine != "fast" and cfg.realistic:
        raise RequestError(
            "--engine poppy simulates the nominal system only: no tolerances or illumination"
        )
    needed = estimate_size_bytes(
        n, len(cfg.wavelengths_um), npix, len(cfg.aberration.modes), optional_variables(cfg),
        segment_count(cfg),
    )  # fmt: skip
    check_free_space(out, needed)
    return GenerationPlan(
        cfg=cfg, out=out, n=n, split=split, seed=cfg.seed if seed is None else seed,
        batch_size=batch_size, device=resolve_device(device), overwrite=overwrite,
        resume=resume, workers=workers, scheduler=scheduler, fsync=fsync, size_bytes=needed,
        fresh_resume=fresh_resume, engine=engine,
    )  # fmt: skip


def _partial_run_exists(out: Path) -> bool:
    """A `<out>.part` of a single-process run, or any shard (or its `.part`) of a sharded one."""
    if part_paths(out)[0].exists():
        return True
    return any(out.parent.glob(f"{glob.escape(out.stem)}.shard-*-of-*{out.suffix}*"))


def run_generation(plan: GenerationPlan, progress: ProgressFn | None = None) -> Path:
    """Simulate the planned samples into `plan.out`; returns the path of the finished file.

    workers > 1: one spawned process per shard (`<stem>.shard-00i-of-00k.h5`), then a
    master file with virtual datasets over the shards. scheduler: the address of a Dask
    distributed scheduler that runs the shard jobs instead of local processes. A killed
    run resumes with `resume=True` in any case; `fsync` also makes every batch durable
    against power loss (slower: each batch waits for the disk).
    """
    common = dict(
        cfg_json=plan.cfg.model_dump_json(), n_total=plan.n, split=plan.split, seed=plan.seed,
        batch_size=plan.batch_size, device=plan.device, overwrite=plan.overwrite, fsync=plan.fsync,
        engine=plan.engine,
    )  # fmt: skip
    if plan.workers == 1 and plan.scheduler is None:
        job = GenerateJob(path=str(plan.out), start=0, stop=plan.n, resume=plan.resume, **common)
        return Path(run_job(job, progress))
    return _generate_sharded(
        plan.out, plan.n, plan.workers, plan.scheduler, plan.resume, common, progress
    )


def generate_dataset(
    cfg: SimConfig, out: Path, n: int, *, progress: ProgressFn | None = None, **options: Any
) -> Path:
    """Check and run a request in one call (`plan_generation` options); returns the file."""
    return run_generation(plan_generation(cfg, out, n, **options), progress)


def _shard_jobs(out: Path, n: int, workers: int, resume: bool, common: dict) -> list[GenerateJob]:
    """Shards on batch boundaries, so each batch holds the samples of the single-process run."""
    batch = common["batch_size"]
    n_batches = -(-n // batch)
    workers = min(workers, n_batches)
    edges = [min(n, round(i * n_batches / workers) * batch) for i in range(workers + 1)]
    threads = max(1, (os.cpu_count() or 1) // workers)
    jobs = []
    for i, (a, b) in enumerate(itertools.pairwise(edges)):
        path = shard_path(out, i, workers)
        done = path.exists() and resume  # a finished shard of an interrupted run
        if done:
            continue
        part = Path(str(path) + ".part")
        jobs.append(
            GenerateJob(
                path=str(path),
                start=a,
                stop=b,
                resume=resume and part.exists(),
                threads=threads,
                **common,
            )
        )
    return jobs, [shard_path(out, i, workers) for i in range(workers)]


def _generate_sharded(
    out: Path,
    n: int,
    workers: int,
    scheduler: str | None,
    resume: bool,
    common: dict,
    progress: ProgressFn | None,
) -> Path:
    if scheduler is None:
        jobs, paths = _shard_jobs(out, n, max(workers, 1), resume, common)
        _run_on_processes(jobs, progress)
        return combine_shards(paths, out, overwrite=common["overwrite"])
    with _dask_client(scheduler) as client:
        if workers == 1:  # the cluster's size: one shard per Dask worker
            workers = max(1, min(n, len(client.scheduler_info().get("workers", {}))))
        jobs, paths = _shard_jobs(out, n, workers, resume, common)
        _run_on_dask(client, jobs, progress)
    return combine_shards(paths, out, overwrite=common["overwrite"])


def _dask_client(address: str) -> Any:
    """A `distributed.Client` of the scheduler at `address` (one-line errors)."""
    try:
        from distributed import Client
    except ImportError:
        raise RequestError("{scheduler} needs dask.distributed: pip install 'zwfs[dask]'") from None
    try:
        return Client(address, timeout="10s")
    except OSError as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise RequestError(f"cannot reach the Dask scheduler at {address}: {first}") from None


def _run_on_processes(jobs: list[GenerateJob], progress: ProgressFn | None) -> None:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(
        max_workers=len(jobs) or 1, mp_context=mp.get_context("spawn")
    ) as pool:
        futures = {pool.submit(run_job, job): job for job in jobs}
        for future in as_completed(futures):
            future.result()
            if progress:
                job = futures[future]
                progress(job.stop - job.start)


def _run_on_dask(client: Any, jobs: list[GenerateJob], progress: ProgressFn | None) -> None:
    from distributed import as_completed

    futures = client.map(run_job, jobs, pure=False)
    done = dict(zip(futures, jobs, strict=True))
    for future in as_completed(futures):
        future.result()
        if progress:
            job = done[future]
            progress(job.stop - job.start)
