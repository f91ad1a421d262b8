"""`recon calibrate`: the dot diameter and depth, the pupil shift and scale, from frames."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from common.cli import UserError, console
from recon.cli.lab_noise import GainOpt, check_noise_options, describe_noise, stated_noise
from recon.cli.options import DeviceOpt, PhotonsOpt, ReadNoiseOpt, detector_overrides

if TYPE_CHECKING:  # numpy loads when a command runs: `recon --help` stays light
    import numpy as np

__all__ = ["calibrate_command"]


@dataclass
class _Frames:
    """Normalised frames (B, L, N, N), their clear frames or None, the system config (its
    detector: a dataset's noise), the known coefficients (B, J) [nm] or None, the lab
    frames (FITS) or None, and where they came from."""

    frames: np.ndarray
    clear: np.ndarray | None
    cfg: Any
    known: np.ndarray | None
    lab: Any
    source: str


def _read_commands(path: Path, n_frames: int, n_modes: int) -> np.ndarray:
    """Commanded OPD coefficients (B, J) [nm RMS, Noll 2..] from .npy, .fits or text."""
    import numpy as np

    if not path.is_file():
        raise UserError(f"no commands file at {path}")
    try:
        if path.suffix.lower() == ".npy":
            c = np.load(path)
        elif path.suffix.lower() in (".fits", ".fit", ".fts"):
            from data.lab import read_fits_image

            c = read_fits_image(path)
        else:
            c = np.loadtxt(path, delimiter="," if path.suffix.lower() == ".csv" else None)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read the commands {path}: {str(err).splitlines()[0]}") from None
    c = np.atleast_2d(np.asarray(c, dtype=np.float64))
    if c.shape != (n_frames, n_modes):
        raise UserError(
            f"the commands {path} hold {c.shape}; expected (frames, modes) = "
            f"({n_frames}, {n_modes}): OPD [nm RMS] of Noll 2-{n_modes + 1}, one row per frame"
        )
    return c


def _from_fits(frames: Path, clear: Path | None, dark: Path | None, run: Path | None,
               commands: Path | None, device: str) -> tuple[_Frames, Any]:  # fmt: skip
    """Lab frames from FITS; the system is the checkpoint's (--run)."""
    import numpy as np

    from data.lab import load_lab_frames
    from recon.estimators import NetworkEstimator
    from recon.estimators.base import as_clear, as_frames
    from sim.config import SimConfig

    if clear is None:
        raise UserError("--frames needs --clear: the clear-pupil frame normalises the intensities")
    if run is None:
        raise UserError("--frames needs --run: the checkpoint's system is the nominal one")
    net = NetworkEstimator.from_checkpoint(run, device=device)
    if net.meta.get("sim_config") is None:
        raise UserError(f"{run} holds no sim_config: it cannot say the nominal system")
    cfg = SimConfig.model_validate(net.meta["sim_config"])
    lab = load_lab_frames(frames, clear, dark, npix=cfg.pupil.npix)
    x = as_frames(lab.intensity, cfg.wavelengths_m, cfg.pupil.npix).astype(np.float64)
    c = as_clear(lab.clear, cfg.wavelengths_m, cfg.pupil.npix, len(x))
    known = None
    if commands is not None:
        known = _read_commands(commands, len(x), cfg.aberration.noll_max - 1)
    return _Frames(x, np.broadcast_to(c, x.shape), cfg, known, lab, str(frames)), net


def _from_dataset(data: Path, known: bool, k: int, detector: dict) -> _Frames:
    """The first k frames of a dataset file, its system (noise overridden by `detector`)."""
    import numpy as np

    from recon.evaluation import open_test_set

    if not data.exists():
        raise UserError(f"no dataset at {data}")
    with open_test_set(data, required=("intensity",) + (("coefficients",) if known else ())) as ts:
        cfg = ts.sim_config().with_overrides(**detector)
        k = min(k, ts.n)
        frames = np.asarray(ts.file["intensity"][:k], dtype=np.float64)
        truth = np.asarray(ts.file["coefficients"][:k], dtype=np.float64) if known else None
        file_modes = [int(j) for j in ts.file["mode"][:]] if known else []
    if known and file_modes != list(range(2, cfg.aberration.noll_max + 1)):
        raise UserError(f"{data} holds Noll {file_modes[0]}-{file_modes[-1]}, the system "
                        f"Noll 2-{cfg.aberration.noll_max}")  # fmt: skip
    return _Frames(frames, None, cfg, truth, None, str(data))


def calibrate_command(
    data: Annotated[Path | None, typer.Option(help="a dataset file (sim generate)")] = None,
    frames: Annotated[Path | None, typer.Option(help="lab ZWFS frames (FITS cube)")] = None,
    clear: Annotated[Path | None, typer.Option(help="clear-pupil frame (FITS)")] = None,
    dark: Annotated[Path | None, typer.Option(help="dark frame (FITS)")] = None,
    run: Annotated[
        Path | None, typer.Option(help="run folder or .ckpt: its refined estimate is the start")
    ] = None,
    known: Annotated[
        bool,
        typer.Option(help="--data: the file's coefficients are the known aberrations (DM pokes)"),
    ] = False,
    commands: Annotated[
        Path | None,
        typer.Option(help="--frames: known OPD coefficients [nm RMS, Noll 2..] per frame"),
    ] = None,
    n: Annotated[int, typer.Option(min=1, help="frames to fit (see the command's help)")] = 8,
    out: Annotated[Path, typer.Option(help="calibration JSON")] = Path("calibration.json"),
    overwrite: Annotated[bool, typer.Option(help="replace an existing --out")] = False,
    photons: PhotonsOpt = None,
    read_noise: ReadNoiseOpt = None,
    gain: GainOpt = None,
    device: DeviceOpt = "cpu",
) -> None:
    """Fit the system (dot, pupil) jointly with the OPD and the frame fluxes.

    Frames: --data (a dataset file), or lab --frames with --clear [--dark] and --run (its
    system is the nominal one). Start: --run's estimate refined with the nominal system
    (the N of the first 4N frames that this fits best), or known aberrations (--known for
    --data, --commands for FITS frames). Noise: the file's, or --gain / --photons and
    --read-noise, else measured from the fit. Use the result with --calibration in recon
    eval, loop and predict.
    """
    import numpy as np
    from rich.table import Table

    from recon.refine import RefinedEstimator, calibrate, save_calibration
    from recon.refine.calibrate import calibrated_intensity
    from recon.refine.forward import FrameModel
    from recon.refine.noise_estimate import estimate_noise
    from sim.system import NOMINAL_SYSTEM, SYSTEM_FIELDS, SYSTEM_UNITS
    from sim.zernike import zernike_basis, zernike_coefficients

    if (data is None) == (frames is None):
        raise UserError("give either --data (a dataset file) or --frames with --clear (FITS)")
    is_known = known or commands is not None
    if known and frames is not None:
        raise UserError("--known is for --data; give FITS frames' known aberrations as --commands")
    if commands is not None and data is not None:
        raise UserError("--commands is for --frames; a dataset's own are used with --known")
    if run is None and not is_known:
        raise UserError("give --run (a trained network starts the fit) or the known aberrations")
    if out.exists() and not overwrite:
        raise UserError(f"{out} already exists; use --overwrite to replace it")
    check_noise_options(gain, photons, frames is not None)
    detector = detector_overrides(photons, read_noise)
    k = n if is_known else 4 * n  # candidates
    net = None
    if frames is not None:
        got, net = _from_fits(frames, clear, dark, run, commands, device)
    else:
        got = _from_dataset(data, known, k, detector)
    cfg, x = got.cfg, got.frames[:k]
    clear_x = None if got.clear is None else np.ascontiguousarray(got.clear[:k])
    modes = list(range(2, cfg.aberration.noll_max + 1))
    try:
        model = FrameModel(cfg, device)
    except ValueError as err:
        raise UserError(str(err)) from None
    if got.lab is None:
        noise = model.noise()  # the file's, or as --photons and --read-noise override it
    else:  # None: measured from the fit below
        noise = stated_noise(got.lab, gain, photons, read_noise, model.pupil_pixels)
    if is_known:
        start = got.known[:k]
    else:
        if net is None:
            from recon.estimators import NetworkEstimator

            net = NetworkEstimator.from_checkpoint(run, device=device)
        # restarts=0: with the nominal (wrong) system every fit is poor, none is stuck
        refined = RefinedEstimator(net, cfg, device=device, restarts=0)
        with console.status(f"refining {len(x)} estimates with the nominal system"):
            opd = refined.estimate(x, clear=clear_x)
        # frames whose start fell outside the basin would pull the system: keep the best
        best = np.sort(np.argsort(refined.last_report.misfit)[: min(n, len(x))])
        x = x[best]
        start = zernike_coefficients(opd[best], zernike_basis(modes, cfg.pupil.npix), model.mask)
    k = len(x)
    opts = {"modes": modes, "fit_opd": not is_known, "device": device}
    measured = None
    with console.status(f"fitting {k} frames with the nominal system, then calibrating"):
        nominal = calibrate(cfg, x, start, fit_system=False, noise=noise, **opts)
        coeffs0 = nominal.coeffs_nm if not is_known else start
        fit = calibrate(cfg, x, coeffs0, noise=noise, **opts)
        if noise is None:  # measured from the calibrated fit, then a weighted fit from it
            fitted = calibrated_intensity(cfg, fit, modes, device)
            measured = estimate_noise(fitted, x, model.lit, read_noise_e=read_noise)
            noise = measured.model()
            fit = calibrate(cfg, x, fit.coeffs_nm if not is_known else start,
                            system0=tuple(fit.system), noise=noise, **opts)  # fmt: skip
    if measured is not None:
        lab = got.lab
        level = None if lab is None else lab.clear_level
        area = 1.0 if lab is None else lab.pixel_area
        noise_text = "measured, " + measured.describe(model.pupil_pixels, level, area)
    else:
        origin = "the file's" if got.lab is None and not detector else "stated"
        noise_text = describe_noise(noise, model.pupil_pixels, origin)
    path = save_calibration(
        fit, out, data=got.source, frames=k, known_aberrations=is_known,
        misfit_nominal_deviance_per_pixel=nominal.misfit, noise=noise_text,
    )  # fmt: skip
    table = Table(title=f"calibration from {k} frames of {Path(got.source).name}")
    for col in ("parameter", "fitted", "nominal"):
        table.add_column(col, justify="right")
    for name, value, nom, unit in zip(
        SYSTEM_FIELDS, fit.system, NOMINAL_SYSTEM, SYSTEM_UNITS, strict=True
    ):
        table.add_row(name, f"{value:.4f} {unit}", f"{nom:g} {unit}")
    console.print(table)
    console.print(f"noise: {noise_text}")
    console.print(
        f"misfit: nominal system {nominal.misfit:.4g}, calibrated {fit.misfit:.4g} (deviance "
        f"per pixel: 1 at the noise level; noiseless: squared residual); solver: "
        f"{fit.status}, {fit.iterations} iterations"
    )
    console.print(f"calibration: {path}  (use: --calibration {path})")
