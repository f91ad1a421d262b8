"""Options and helpers shared by `recon eval`, `recon loop` and `recon predict`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from common.cli import UserError

__all__ = [
    "BatchOpt",
    "CalibrationOpt",
    "DataOpt",
    "DeviceOpt",
    "MaxOpt",
    "NameOpt",
    "OutOpt",
    "PhotonsOpt",
    "ReadNoiseOpt",
    "RefineOpt",
    "WavelengthOpt",
    "add_refined",
    "build_estimators",
    "check_data",
    "count_samples",
    "detector_overrides",
]

DataOpt = Annotated[Path, typer.Option("--data", help="test dataset file (sim generate)")]
WavelengthOpt = Annotated[
    float | None,
    typer.Option("--wavelength", help="wavelength of the baselines [um] (default 1.0)"),
]
OutOpt = Annotated[Path | None, typer.Option("--out", help="report folder [reports/<kind>-<time>]")]
MaxOpt = Annotated[int | None, typer.Option("--max-samples", min=1, help="first N samples only")]
BatchOpt = Annotated[int, typer.Option("--batch-size", min=1, help="samples per batch")]
DeviceOpt = Annotated[str, typer.Option("--device", help="torch device of networks and engine")]
RefineOpt = Annotated[
    str | None,
    typer.Option(
        "--refine",
        help="modal | zonal: also refine each estimate by fitting the frames with the engine",
    ),
]
CalibrationOpt = Annotated[
    Path | None,
    typer.Option(
        "--calibration", help="with --refine: a recon calibrate file (dot, pupil) [nominal]"
    ),
]
PhotonsOpt = Annotated[
    float | None,
    typer.Option("--photons", min=0.0, help="photons in the clear pupil per frame and wavelength"),
]
ReadNoiseOpt = Annotated[
    float | None, typer.Option("--read-noise", min=0.0, help="read noise [e- RMS per pixel]")
]
NameOpt = Annotated[
    list[str] | None,
    typer.Option("--name", help="report label of each checkpoint, in order [arch@wavelengths]"),
]


def detector_overrides(photons: float | None, read_noise: float | None) -> dict[str, float]:
    """Config overrides (``detector.photons``, ``detector.read_noise_e``) of the options
    given; a photon level without read noise means none (not the file's)."""
    if photons is not None and not photons > 0:
        raise UserError(f"--photons must be > 0, got {photons}")
    over: dict[str, float] = {}
    if photons is not None:
        over = {"detector.photons": photons, "detector.read_noise_e": read_noise or 0.0}
    elif read_noise is not None:
        over = {"detector.read_noise_e": read_noise}
    return over


def check_data(data: Path) -> None:
    if not data.exists():
        raise UserError(
            f"no dataset at {data}; make one with: sim generate --config quick --split test "
            f"--n 3000 --out {data}"
        )


def count_samples(data: Path, max_samples: int | None) -> int:
    """Samples to run: the file's count, capped by --max-samples (checks the file)."""
    from recon.evaluation import open_test_set

    with open_test_set(data) as ts:
        return min(ts.n, max_samples) if max_samples else ts.n


def build_estimators(
    sources: list[str],
    baselines: list[str],
    data: Path,
    wavelength_um: float | None,
    device: str = "cpu",
    names: list[str] | None = None,
) -> dict[str, Any]:
    """Label -> estimator for checkpoints / run folders and baseline names (one-line errors).

    Baselines come first. Labels: `names` for the sources, in order, else the estimator's
    own (arch and wavelengths, e.g. ``phenn@1um``); a repeated label gets ``#2``, ``#3``.
    """
    from recon.estimators import NetworkEstimator, create_baseline

    built: list[Any] = []
    try:
        built += [create_baseline(b, data, wavelength_um=wavelength_um) for b in baselines]
        built += [NetworkEstimator.from_checkpoint(src, device=device) for src in sources]
    except ValueError as err:  # unknown names, wavelengths, bad checkpoints
        raise UserError(str(err).splitlines()[0]) from None
    if not built:
        raise UserError("give a checkpoint or run folder, or --baseline analytic")
    labels = list(names or [])
    if len(labels) > len(sources):
        raise UserError(f"{len(labels)} --name values for {len(sources)} checkpoints")
    out: dict[str, Any] = {}
    for i, est in enumerate(built):
        k_source = i - len(baselines)
        base = labels[k_source] if 0 <= k_source < len(labels) else est.name
        label, k = base, 2
        while label in out:
            label, k = f"{base}#{k}", k + 1
        est.name = label
        out[label] = est
    return out


def add_refined(
    estimators: dict[str, Any],
    data: Path,
    mode: str,
    device: str = "cpu",
    zero_start: bool = True,
    only: bool = False,
    calibration: Path | None = None,
    detector: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Estimators plus "<label> + refine" for each (and "zero start + refine").

    `mode`: modal | zonal (`recon.refine.RefinedEstimator`), fitted with the
    dataset's system and photon level (its dot and pupil from `calibration`, a
    `recon calibrate` file, when given; its noise overridden by `detector`,
    `detector_overrides`); `only`: return the refined ones alone.
    """
    from recon.evaluation import open_test_set
    from recon.refine import RefinedEstimator, ZeroEstimator, load_calibration

    if mode not in ("modal", "zonal"):
        raise UserError(f"--refine must be modal or zonal, got {mode!r}")
    system = None if calibration is None else load_calibration(calibration)
    with open_test_set(data) as ts:
        cfg = ts.sim_config().with_overrides(**(detector or {}))
    bases = dict(estimators)
    if zero_start:
        bases["zero start"] = ZeroEstimator(cfg)
    out: dict[str, Any] = {} if only else dict(estimators)
    try:
        for label, est in bases.items():
            refined = RefinedEstimator(est, cfg, mode=mode, device=device, system=system)
            refined.name = f"{label} + refine" + ("" if mode == "modal" else " (zonal)")
            out[refined.name] = refined
    except ValueError as err:  # binning, pixel size
        raise UserError(str(err).splitlines()[0]) from None
    return out
