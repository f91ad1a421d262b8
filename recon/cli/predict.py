"""`recon predict`: OPD maps and Zernike coefficients from lab FITS frames or a dataset file."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from common.cli import UserError, console
from recon.cli.lab_noise import GainOpt, check_noise_options, describe_noise, stated_noise
from recon.cli.options import (
    CalibrationOpt,
    DeviceOpt,
    PhotonsOpt,
    ReadNoiseOpt,
    detector_overrides,
)

if TYPE_CHECKING:  # numpy loads when a command runs: `recon --help` stays light
    import numpy as np

__all__ = ["predict_command"]


def _frames_from_dataset(
    path: Path, max_samples: int | None
) -> tuple[np.ndarray, list[float], np.ndarray]:
    """(frames (B, L, H, W), wavelengths [m], clear frames (B or 1, L, H, W))."""
    import numpy as np

    from recon.evaluation import open_test_set

    with open_test_set(path, required=("intensity",)) as ts:
        n = ts.n if max_samples is None else min(max_samples, ts.n)
        frames = np.asarray(ts.file["intensity"][:n])
        return frames, ts.wavelengths_m, ts.clear(0, n)


def _noise_line(rec: Any, lab: Any, origin: str) -> str:
    """The noise the fit used, with units: measured (and how) or stated."""
    pupil_px = rec.refined.model.pupil_pixels
    if rec.noise_estimate is not None:
        level = None if lab is None else lab.clear_level
        area = 1.0 if lab is None else lab.pixel_area
        return "measured, " + rec.noise_estimate.describe(pupil_px, level, area)
    return describe_noise(rec.refined.frame_noise, pupil_px, origin)


def _refuse_existing(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise UserError(f"{out} already exists; use --overwrite to replace it")


def predict_command(
    checkpoint: Annotated[Path, typer.Argument(help="run folder or .ckpt file")],
    frames: Annotated[Path | None, typer.Option(help="ZWFS frame or cube (FITS)")] = None,
    clear: Annotated[Path | None, typer.Option(help="clear-pupil frame (FITS)")] = None,
    dark: Annotated[Path | None, typer.Option(help="dark frame (FITS)")] = None,
    data: Annotated[Path | None, typer.Option(help="a dataset file (.h5) instead of FITS")] = None,
    wavelengths: Annotated[
        str | None, typer.Option(help="the FITS channels' wavelengths, um [the model's]")
    ] = None,
    max_samples: Annotated[int | None, typer.Option(help="with --data: first N samples")] = None,
    out: Annotated[Path | None, typer.Option(help="result .fits or .h5")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace an existing result file")] = False,
    refine: Annotated[
        str | None,
        typer.Option(help="modal | zonal: refine the network's estimate with the ZWFS engine"),
    ] = None,
    calibration: CalibrationOpt = None,
    photons: PhotonsOpt = None,
    read_noise: ReadNoiseOpt = None,
    gain: GainOpt = None,
    device: DeviceOpt = "cpu",
) -> None:
    """Reconstruct the OPD [nm] and its Noll coefficients with a trained network.

    The refinement weighs pixels by the frames' noise: a dataset file's own; for FITS
    frames --gain (with the clear frame's level) or --photons, and --read-noise; with
    none of them it is measured from the frames and reported.
    """
    import numpy as np
    from rich.table import Table

    from data.lab import load_lab_frames
    from recon.reconstructor import Reconstructor, write_prediction

    if out is not None and out.suffix.lower() not in (".fits", ".fit", ".fts", ".h5", ".hdf5"):
        raise UserError(f"--out {out} must end in .fits or .h5")
    if out is not None:
        _refuse_existing(out, overwrite)  # before any model is loaded
    if (frames is None) == (data is None):
        raise UserError("give either --frames with --clear (FITS), or --data (a dataset file)")
    if frames is not None and clear is None:
        raise UserError("--frames needs --clear: the clear-pupil frame normalises the intensities")
    if refine is not None and refine not in ("modal", "zonal"):
        raise UserError(f"--refine must be modal or zonal, got {refine!r}")
    if calibration is not None and refine is None:
        raise UserError("--calibration needs --refine (the calibrated system refines the estimate)")
    detector = detector_overrides(photons, read_noise)
    check_noise_options(gain, photons, data is None, "--refine" if refine is None else None)
    if read_noise is not None and refine is None:
        raise UserError("--read-noise needs --refine (it weighs the fit)")
    system = None
    if calibration is not None:
        from recon.refine.calibrate import load_calibration

        system = load_calibration(calibration)
    sim_cfg = None
    if refine is not None and data is not None and data.is_file():
        from recon.evaluation import open_test_set

        with open_test_set(data) as ts:  # the frames' own system and photon level
            sim_cfg = ts.sim_config().with_overrides(**detector)
    noise = "system" if data is not None else "estimate"
    try:
        rec = Reconstructor.from_checkpoint(
            checkpoint, device=device, refine=refine, sim_config=sim_cfg, system=system,
            noise=noise, read_noise_e=read_noise,
        )  # fmt: skip
    except ValueError as err:  # no system to refine with, binning, pixel size
        raise UserError(str(err).splitlines()[0]) from None
    if data is not None:
        if not data.is_file():
            raise FileNotFoundError(f"no dataset at {data}")
        x, wl_m, clear_x = _frames_from_dataset(data, max_samples)
        source = str(data)
    else:
        lab = load_lab_frames(frames, clear, dark, npix=rec.estimator.npix)
        x, clear_x = lab.intensity, lab.clear
        if rec.refined is not None:
            pupil_px = rec.refined.model.pupil_pixels
            if (noise := stated_noise(lab, gain, photons, read_noise, pupil_px)) is not None:
                rec.use_noise(noise)
        wl_m = [float(w) * 1e-6 for w in wavelengths.split(",")] if wavelengths else None
        source = str(frames)
    try:
        result = rec(x, wl_m, clear_x)
    except ValueError as err:
        raise UserError(str(err)) from None
    out = out or (
        Path(source)
        .with_name(Path(source).stem + "_opd")
        .with_suffix(".fits" if data is None else ".h5")
    )
    _refuse_existing(out, overwrite)
    write_prediction(result, out, source)
    table = Table(title=f"{len(result.opd_nm)} frame(s) -> {out}")
    for col in ("frame", "OPD RMS [nm]", "largest modes (Noll j: nm)"):
        table.add_column(col, justify="right")
    from data.schema import pupil_mask

    inside = pupil_mask(result.pupil)
    for i, (opd, c) in enumerate(zip(result.opd_nm[:10], result.coefficients_nm[:10], strict=True)):
        top = np.argsort(-np.abs(c))[:3]
        modes = ", ".join(f"{result.modes[k]}: {c[k]:+.0f}" for k in top)
        table.add_row(str(i), f"{opd[inside].std():.1f}", modes)
    console.print(table)
    if (rep := result.refine_report) is not None:
        origin = "stated" if detector or data is None else "the file's"
        console.print(f"noise: {_noise_line(rec, None if data is not None else lab, origin)}")
        counts = ", ".join(f"{v} {k}" for k, v in rep.counts().items() if v)
        console.print(
            f"refined ({refine}), frames per status: {counts}; "
            f"median {np.median(rep.iterations):.0f} iterations, "
            f"median misfit {np.median(rep.misfit):.3g} (deviance per pixel), "
            f"{int((rep.starts > 1).sum())} restarted"
        )
        if rep.good_fit.mean() < 0.5:
            console.print(
                "[yellow]most fits stay above the noise: the model may not match these "
                "frames (recon calibrate, then --calibration)[/yellow]"
            )
