"""`sim system`: show what a system file simulates, or write one from pyZELDA's description."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from common.cli import UserError, console, one_line_errors, wavelengths_option

__all__ = ["describe_system", "system_command"]


def describe_system(system) -> list[tuple[str, str]]:
    """(quantity, value with unit) rows of a `SystemFile`: what the engine will simulate."""
    import numpy as np

    from sim.config import system_sim_config
    from sim.mask import dot_phase_rad

    cfg = system_sim_config(system)
    phase = dot_phase_rad(cfg.wavelengths_um, cfg.mask) / np.pi
    cam, dot = system.camera, system.dot
    return [
        ("instrument", system.name),
        ("telescope pupil", f"{system.telescope_diameter_m:g} m"),
        ("dot diameter", f"{dot.lambda0_d:.4f} lambda0/D at {dot.lambda0_um:g} um"),
        ("dot OPD at lambda0", f"{dot.opd_depth_nm:.1f} nm ({dot.substrate})"),
        ("dot phase", ", ".join(f"{p:.3f} pi at {w:g} um"
                                for p, w in zip(phase, cfg.wavelengths_um, strict=True))),
        ("camera", f"{cam.pupil_px} px across the pupil, binning {cam.binning}, "
                   f"gain {cam.gain_e_per_adu or 'unknown'} e-/ADU, read noise "
                   f"{cam.read_noise_e:g} e-"),
        ("model sampling", f"{system.npix} px across the pupil "
                           f"({cfg.pixel_scale_m * 1e3:.1f} mm per px on the sky pupil)"),
        ("training aberrations", f"Noll 2-{system.noll_max}, 0-{system.rms_max_nm:g} nm RMS"),
    ]  # fmt: skip


@one_line_errors
def system_command(
    source: Annotated[
        str | None, typer.Argument(help="system file (YAML path or packaged name)")
    ] = None,
    from_pyzelda: Annotated[
        Path | None,
        typer.Option("--from-pyzelda", help="pyZELDA instrument .ini (e.g. SPHERE-IRDIS.ini)"),
    ] = None,
    wavelengths: Annotated[
        str | None, typer.Option(help="--from-pyzelda: comma-separated [um], first = lambda0")
    ] = None,
    telescope: Annotated[
        float | None, typer.Option(help="--from-pyzelda: telescope pupil diameter [m]")
    ] = None,
    model_px: Annotated[
        int, typer.Option(help="--from-pyzelda: pixels across the pupil in the model")
    ] = 64,
    out: Annotated[Path | None, typer.Option(help="write the system file here (YAML)")] = None,
) -> None:
    """Your ZWFS in one file: dot [um, F-ratio] or [lambda0/D], depth [um], substrate,
    wavelengths, camera. Shows the system the engine simulates; any --config takes it."""
    import yaml
    from rich.table import Table

    from common.io import write_text_atomic
    from sim.system_file import load_system_file, system_from_pyzelda

    if (source is None) == (from_pyzelda is None):
        raise UserError("give one of: a system file, or --from-pyzelda INI")
    if from_pyzelda is not None:
        if wavelengths is None or telescope is None:
            raise UserError("--from-pyzelda needs --wavelengths (um) and --telescope (m)")
        waves = wavelengths_option(wavelengths)
        system = system_from_pyzelda(from_pyzelda, waves, telescope, model_px)
    else:
        system = load_system_file(source)
    table = Table(title=f"ZWFS system: {system.name}", show_header=False)
    for key, value in describe_system(system):
        table.add_row(key, value)
    console.print(table)
    if out is not None:
        data = system.model_dump(exclude_none=True)
        header = "# ZWFS system file (sim system; docs/lab.md)\n"
        write_text_atomic(out, header + yaml.safe_dump(data, sort_keys=False))
        console.print(f"wrote {out}: sim generate --config {out}")
