"""`recon calibrate`: the dot diameter and depth, the pupil shift and scale, from frames."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.table import Table

from common.cli import UserError, console
from recon.cli.options import DataOpt, DeviceOpt, check_data

__all__ = ["calibrate_command"]


def calibrate_command(
    data: DataOpt,
    run: Annotated[
        Path | None, typer.Option(help="run folder or .ckpt: its refined estimate is the start")
    ] = None,
    known: Annotated[
        bool,
        typer.Option(help="the file's coefficients are the known aberrations (a DM poke set)"),
    ] = False,
    n: Annotated[int, typer.Option(min=1, help="frames to fit (see the command's help)")] = 8,
    out: Annotated[Path, typer.Option(help="calibration JSON")] = Path("calibration.json"),
    overwrite: Annotated[bool, typer.Option(help="replace an existing --out")] = False,
    device: DeviceOpt = "cpu",
) -> None:
    """Fit the system (dot, pupil) jointly with the OPD and the frame fluxes.

    Start: --run's estimate refined with the nominal system (the N of the first 4N
    frames that this fits best), or the first N frames' --known aberrations.
    Use the result with --calibration in recon eval, loop and predict.
    """
    from recon.estimators import NetworkEstimator
    from recon.evaluation import open_test_set
    from recon.refine import FrameModel, RefinedEstimator, calibrate, save_calibration
    from sim.system import NOMINAL_SYSTEM, SYSTEM_FIELDS, SYSTEM_UNITS
    from sim.zernike import zernike_basis, zernike_coefficients

    if run is None and not known:
        raise UserError("give --run (a trained network starts the fit) or --known")
    if out.exists() and not overwrite:
        raise UserError(f"{out} already exists; use --overwrite to replace it")
    check_data(data)
    with open_test_set(data, required=("intensity",) + (("coefficients",) if known else ())) as ts:
        cfg = ts.sim_config()
        k = min(n if known else 4 * n, ts.n)  # candidates
        frames = np.asarray(ts.file["intensity"][:k], dtype=np.float64)
        truth = np.asarray(ts.file["coefficients"][:k], dtype=np.float64) if known else None
        file_modes = [int(j) for j in ts.file["mode"][:]] if known else []
    modes = list(range(2, cfg.aberration.noll_max + 1))
    try:
        model = FrameModel(cfg, device)
    except ValueError as err:
        raise UserError(str(err)) from None
    if known:
        if file_modes != modes:
            raise UserError(f"{data} holds Noll {file_modes[0]}-{file_modes[-1]}, the system "
                            f"Noll 2-{cfg.aberration.noll_max}")  # fmt: skip
        start = truth
    else:
        net = NetworkEstimator.from_checkpoint(run, device=device)
        # restarts=0: with the nominal (wrong) system every fit is poor, none is stuck
        refined = RefinedEstimator(net, cfg, device=device, restarts=0)
        with console.status(f"refining {k} estimates with the nominal system"):
            opd = refined.estimate(frames)
        # frames whose start fell outside the basin would pull the system: keep the best
        best = np.sort(np.argsort(refined.last_report.misfit)[: min(n, k)])
        frames, k = frames[best], len(best)
        start = zernike_coefficients(opd[best], zernike_basis(modes, cfg.pupil.npix), model.mask)
    noise = model.noise()
    opts = {"modes": modes, "noise": noise, "fit_opd": not known, "device": device}
    with console.status(f"fitting {k} frames with the nominal system, then calibrating"):
        nominal = calibrate(cfg, frames, start, fit_system=False, **opts)
        fit = calibrate(cfg, frames, nominal.coeffs_nm if not known else start, **opts)
    path = save_calibration(
        fit, out, data=str(data), frames=k, known_aberrations=known,
        misfit_nominal_deviance_per_pixel=nominal.misfit,
    )  # fmt: skip
    table = Table(title=f"calibration from {k} frames of {data.name}")
    for col in ("parameter", "fitted", "nominal"):
        table.add_column(col, justify="right")
    for name, value, nom, unit in zip(
        SYSTEM_FIELDS, fit.system, NOMINAL_SYSTEM, SYSTEM_UNITS, strict=True
    ):
        table.add_row(name, f"{value:.4f} {unit}", f"{nom:g} {unit}")
    console.print(table)
    console.print(
        f"deviance per pixel: nominal system {nominal.misfit:.4g}, calibrated {fit.misfit:.4g} "
        f"(1 at the noise level when the frames carry photons); solver: {fit.status}, "
        f"{fit.iterations} iterations"
    )
    console.print(f"calibration: {path}  (use: --calibration {path})")
