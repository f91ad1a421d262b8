"""`recon train`: datasets, run folder, Lightning Trainer; `train(cfg) -> run_dir`.

Run folder ``<out_dir>/<arch>-<YYYYmmdd-HHMMSS>/``: ``config.yaml`` (resolved),
``checkpoints/best.ckpt`` and ``last.ckpt``, ``metrics.csv`` (every Lightning CSV log of
the run, resumes included; per-attempt logs under ``logs/``), TensorBoard logs under
``tb/`` when tensorboard is installed.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_only

from common.hardware import HardwarePlan
from common.io import write_json_atomic
from common.provenance import local_stamp, utc_now_iso
from data.schema import package_versions
from data.torch_dataset import ZWFSDataset
from recon.models import CHECKPOINT_FORMAT, NormStats, build_model
from recon.train.config import TrainConfig
from recon.train.data import DatasetMismatchError, TrainData, ZWFSDataModule, load_data
from recon.train.module import LitRecon
from recon.train.normalization import compute_stats
from recon.train.trainer import build_trainer
from sim.config import load_sim_config

__all__ = [
    "checkpoint_meta",
    "fit_run",
    "new_run_dir",
    "train",
]

RUN_DIR_ENV = "ZWFS_RUN_DIR"
"""Environment variable that hands the run folder to DDP worker processes."""


def new_run_dir(cfg: TrainConfig, tag: str = "") -> Path:
    """A new run folder, shared by every process of one run (DDP workers, SLURM tasks).

    The launching process picks the folder and hands it to the DDP worker processes it
    starts through the environment variable `RUN_DIR_ENV` (removed after the run).
    """
    if os.environ.get(RUN_DIR_ENV):
        return Path(os.environ[RUN_DIR_ENV])
    job = os.environ.get("SLURM_JOB_ID")
    if job and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        return (cfg.out_dir / f"{cfg.arch}{tag}-slurm{job}").absolute()  # tasks start apart
    base = (cfg.out_dir / f"{cfg.arch}{tag}-{local_stamp()}").absolute()
    run_dir, k = base, 0
    while run_dir.exists():  # two runs in the same second
        k += 1
        run_dir = base.with_name(f"{base.name}-{k}")
    return run_dir


def _sim_config(ds: ZWFSDataset) -> Any:
    text = ds.attrs.get("config")
    try:
        return json.loads(text) if isinstance(text, str) else text
    except json.JSONDecodeError:
        return text


def checkpoint_meta(
    cfg: TrainConfig, data: TrainData, stats: NormStats, n_wl: int
) -> dict[str, Any]:
    """What a checkpoint needs to rebuild and describe the model without Lightning."""
    src = data.source
    info = {
        "train": str(src.path),
        "val": data.val_source,
        "split": src.attrs.get("split"),
        "seed": src.attrs.get("seed"),
        "fingerprint": src.attrs.get("fingerprint"),
    }
    return _meta(cfg, stats, n_wl, src.wavelengths_m, src.npix, src.pupil, _sim_config(src), info)


def _meta(
    cfg: TrainConfig,
    stats: NormStats,
    n_wl: int,
    wavelengths_m: Sequence[float],
    npix: int,
    pupil: torch.Tensor,
    sim_config: Any,
    data_info: dict[str, Any],
) -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT[0],
        "format_version": CHECKPOINT_FORMAT[1],
        "arch": cfg.arch,
        "model_kwargs": {**cfg.kwargs, "in_ch": n_wl, "out_ch": 1},
        "wavelengths_m": [float(w) for w in wavelengths_m],
        "npix": int(npix),
        "pupil": pupil.clone(),
        "normalization": stats.to_dict(),
        "train_config": cfg.model_dump(mode="json"),
        "sim_config": sim_config,
        "data": data_info,
        "versions": {**package_versions(), "lightning": pl.__version__},
        "created": utc_now_iso(),
    }


def merge_metrics(run_dir: Path) -> Path | None:
    """Concatenate ``logs/version_*/metrics.csv`` (in order) into ``run_dir/metrics.csv``."""
    parts = sorted(
        (run_dir / "logs").glob("version_*/metrics.csv"),
        key=lambda p: int(p.parent.name.split("_")[1]),
    )
    rows: list[dict[str, str]] = []
    keys: list[str] = []
    for part in parts:
        with part.open(newline="") as fh:
            reader = csv.DictReader(fh)
            keys += [k for k in reader.fieldnames or [] if k not in keys]
            rows += list(reader)
    if not rows:
        return None
    out = run_dir / "metrics.csv"
    with out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    return out


def check_size(model: torch.nn.Module, npix: int) -> None:
    multiple = getattr(model, "size_multiple", 1)
    if npix % multiple:
        raise DatasetMismatchError(
            f"the data's {npix} px is not a multiple of {multiple}, which the model's depth "
            "needs (one factor 2 per level): use fewer widths or another sampling"
        )


def resolve(cfg: TrainConfig, data: TrainData) -> TrainConfig:
    """The config with the data's wavelengths and sampling filled in (what a resume checks)."""
    wl_um = [round(float(w) * 1e6, 6) for w in data.source.wavelengths_m]
    return cfg.with_overrides(**{"data.wavelengths_um": wl_um, "data.npix": data.source.npix})


def train(
    cfg: TrainConfig,
    resume: str | os.PathLike | None = None,
    callbacks: Sequence[pl.Callback] = (),
    hardware: HardwarePlan | None = None,
    **trainer_overrides: Any,
) -> Path:
    """Train `cfg.arch` on `cfg.data`; returns the run folder.

    Args:
        cfg: training config (for a resume: the run's own ``config.yaml``, possibly with
            more epochs).
        resume: a run folder to continue from its ``checkpoints/last.ckpt``.
        callbacks: extra Lightning callbacks.
        hardware: the hardware plan; None: `cfg.hardware()`. A plan for another device
            than the one training runs on is how tests run the CUDA settings on a CPU.
        **trainer_overrides: extra `lightning.pytorch.Trainer` arguments (tests, debugging).
    """
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    if cfg.online:
        return train_online(cfg, resume, callbacks, hardware, **trainer_overrides)
    data = load_data(cfg)
    cfg = resolve(cfg, data)
    n_wl = len(data.source.wavelengths_m)
    stats = compute_stats(
        data.source, data.source.pupil, data.train_indices, cfg.data.stats_samples
    )
    model = build_model(cfg.arch, cfg.kwargs, n_wl, stats)
    check_size(model.net, data.source.npix)
    run_dir, ckpt_path = _run_folder(cfg, resume)
    meta = checkpoint_meta(cfg, data, stats, n_wl)
    lit = LitRecon(cfg, model, data.source.pupil, meta, hardware)
    return fit_run(cfg, lit, data, run_dir, callbacks, ckpt_path, **trainer_overrides)


def _run_folder(cfg: TrainConfig, resume: str | os.PathLike | None) -> tuple[Path, Path | None]:
    """(run folder, checkpoint to resume from or None)."""
    if resume is None:
        return new_run_dir(cfg), None
    run_dir = Path(resume).absolute()
    ckpt_path = run_dir / "checkpoints" / "last.ckpt"
    if not ckpt_path.is_file():
        raise FileNotFoundError(f"nothing to resume: {ckpt_path} does not exist")
    return run_dir, ckpt_path


def train_online(
    cfg: TrainConfig,
    resume: str | os.PathLike | None = None,
    callbacks: Sequence[pl.Callback] = (),
    hardware: HardwarePlan | None = None,
    **trainer_overrides: Any,
) -> Path:
    """`train` with every batch simulated on the device (`recon.train.online`)."""
    from recon.train.online import OnlineDataModule, OnlineSimulator, online_stats

    sim_cfg = load_sim_config(cfg.data.sim_config)
    if cfg.data.wavelengths_um is not None:
        sim_cfg = sim_cfg.with_overrides(wavelengths_um=list(cfg.data.wavelengths_um))
    by_clear = cfg.data.normalisation == "clear"
    cpu_sim = OnlineSimulator(sim_cfg, cfg.seed, torch.device("cpu"), by_clear=by_clear)
    val, val_source = _online_validation(cfg, sim_cfg, cpu_sim)
    npix, n_wl = int(val[0].shape[-1]), len(sim_cfg.wavelengths_um)
    cfg = cfg.with_overrides(
        **{"data.wavelengths_um": list(sim_cfg.wavelengths_um), "data.npix": npix}
    )
    stats = online_stats(cpu_sim, cfg.data.stats_samples)
    model = build_model(cfg.arch, cfg.kwargs, n_wl, stats)
    check_size(model.net, npix)
    run_dir, ckpt_path = _run_folder(cfg, resume)
    meta = _meta(
        cfg, stats, n_wl, sim_cfg.wavelengths_m, npix, cpu_sim.pupil, sim_cfg.model_dump(),
        {"train": f"online: {cfg.data.sim_config}, seed {cfg.seed}", "val": val_source},
    )  # fmt: skip
    lit = LitRecon(cfg, model, cpu_sim.pupil, meta, hardware)
    dm = OnlineDataModule(cfg, sim_cfg, val)
    return fit_run(cfg, lit, dm, run_dir, callbacks, ckpt_path, **trainer_overrides)


def _online_validation(
    cfg: TrainConfig, sim_cfg: Any, sim: Any
) -> tuple[tuple[torch.Tensor, torch.Tensor], str]:
    """The validation set of an online run: `data.val` when it is a file, else simulated."""
    from sim.aberrations import stream_id

    if cfg.data.val is not None and cfg.data.val.is_file():
        by_clear = cfg.data.normalisation == "clear"
        ds = ZWFSDataset(
            cfg.data.val, wavelengths_um=sim_cfg.wavelengths_um, divide_by_clear=by_clear
        )
        if ds.npix != sim_cfg.pupil.npix // sim_cfg.detector.binning:
            raise DatasetMismatchError(
                f"validation dataset {ds.path} has {ds.npix} px, the online system "
                f"({cfg.data.sim_config}) {sim_cfg.pupil.npix // sim_cfg.detector.binning} px"
            )
        return ds.read_arrays(), str(ds.path)
    n = cfg.data.online_val_samples
    x, y = type(sim)(sim.cfg, sim.seed, sim.device, stream_id("val"), sim.by_clear).samples(n)
    return (x, y), f"{n} simulated samples (stream 'val')"


def fit_run(
    cfg: TrainConfig,
    lit: pl.LightningModule,
    data: TrainData | pl.LightningDataModule,
    run_dir: Path,
    callbacks: Sequence[pl.Callback] = (),
    ckpt_path: Path | None = None,
    extra_files: dict[str, str] | None = None,
    **trainer_overrides: Any,
) -> Path:
    """Write the run folder's config, fit `lit` on `data` (datasets, or a data module such as
    the online simulator's), assemble metrics.csv; returns run_dir."""
    if rank_zero_only.rank == 0:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(cfg.to_yaml())
        for name, text in (extra_files or {}).items():
            (run_dir / name).write_text(text)
    plan = getattr(lit, "plan", None)
    if isinstance(data, pl.LightningDataModule):
        dm = data
    else:
        opts = (cfg.batch_size, cfg.data.num_workers, cfg.seed, cfg.data.placement)
        dm = ZWFSDataModule(data, *opts, plan)
    trainer = build_trainer(cfg, run_dir, callbacks, plan, **trainer_overrides)
    own_env = RUN_DIR_ENV not in os.environ
    os.environ[RUN_DIR_ENV] = str(run_dir)  # DDP workers started by fit() read it
    try:
        trainer.fit(lit, datamodule=dm, ckpt_path=ckpt_path)
    finally:
        if own_env:
            os.environ.pop(RUN_DIR_ENV, None)
        if trainer.is_global_zero:
            merge_metrics(run_dir)
            _write_hardware(run_dir, lit)
    return run_dir


def _write_hardware(run_dir: Path, lit: pl.LightningModule) -> None:
    """``hardware.json``: the plan the run followed and what its steps ran (compiled?)."""
    if not isinstance(lit, LitRecon):
        return
    record = {**lit.plan.describe(), "compile_status": lit.compile_status}
    write_json_atomic(run_dir / "hardware.json", record)
