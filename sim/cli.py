"""`sim` command line: check and benchmark the engine (generate, show: see their commands)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from sim.cliutil import console, one_line_errors, write_json_atomic
from sim.config import load_sim_config

app = typer.Typer(
    help="Simulate Zernike wavefront sensor (ZWFS) data.",
    no_args_is_help=True,
    add_completion=False,
)

ConfigOpt = Annotated[
    str, typer.Option("--config", "-c", help="config name in configs/sim/ or a YAML path")
]


@app.command()
@one_line_errors
def check(
    config: ConfigOpt = "paper",
    rms: Annotated[str, typer.Option(help="comma-separated OPD RMS values [nm]")] = "0,50,200,500",
    seed: int = 0,
    converged: Annotated[bool, typer.Option(help="also compare with a q=256 reference")] = True,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the rows as JSON")] = None,
) -> None:
    """Engine against the POPPY reference: agreement per wavelength and RMS."""
    from sim.check import TOLERANCE, rows_as_dicts, run_check

    cfg = load_sim_config(config)
    rms_nm = [float(v) for v in rms.split(",")]
    with console.status("running the engine and POPPY on the same wavefronts..."):
        rows = run_check(cfg, rms_nm, seed=seed, converged=converged)
    table = Table(
        title=f"ZWFS engine vs POPPY SAMC ({cfg.pupil.npix} px, {cfg.precision}, "
        f"q = {cfg.focal.samples_per_lambda0_d:g}/(lambda0/D), "
        f"{'grey' if cfg.focal.antialias else 'hard'} dot edge)"
    )
    for col in ("lambda [um]", "RMS [nm]", "max |dI| / peak", "rms dI / peak", "vs converged"):
        table.add_column(col, justify="right")
    table.add_column(f"< {TOLERANCE:g}")
    for r in rows:
        conv = "-" if r.converged_max_err is None else f"{r.converged_max_err:.1e}"
        table.add_row(
            f"{r.wavelength_um:.2f}", f"{r.rms_nm:g}", f"{r.max_abs_err:.1e}",
            f"{r.rms_err:.1e}", conv, "[green]yes[/]" if r.passed else "[red]NO[/]",
        )  # fmt: skip
    console.print(table)
    if json_out:
        write_json_atomic(json_out, {"config": cfg.model_dump(), "rows": rows_as_dicts(rows)})
        console.print(f"wrote {json_out}")
    if not all(r.passed for r in rows):
        raise typer.Exit(1)


@app.command()
@one_line_errors
def bench(
    config: ConfigOpt = "paper",
    n: Annotated[int, typer.Option(help="wavefronts for the engine")] = 256,
    n_reference: Annotated[int, typer.Option(help="wavefronts for POPPY and hcipy")] = 8,
    batch: int = 32,
    threads: Annotated[int, typer.Option(help="threads for every peer")] = 1,
    out: Annotated[Path, typer.Option(help="JSON output")] = Path("bench/sim_bench.json"),
) -> None:
    """Throughput per core of the engine, POPPY and hcipy on the same wavefronts."""
    from sim.bench import run_bench

    cfg = load_sim_config(config)
    with console.status(f"timing {n} wavefronts (engine) and {n_reference} (references)..."):
        rows, meta = run_bench(
            cfg, n_engine=n, n_reference=n_reference, batch=batch, threads=threads
        )
    table = Table(
        title=f"ZWFS simulation, {cfg.pupil.npix} px, {len(cfg.wavelengths_um)} wavelengths, "
        f"{threads} thread(s); ms/wf/lambda: per wavefront and wavelength; err vs conv.: "
        "max error against a q=256 reference, of the peak"
    )
    for col in ("peer", "samples", "samples/s/core", "ms/wf/lambda", "x POPPY", "err vs conv."):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            r.peer, str(r.samples), f"{r.samples_per_s_per_core:.1f}",
            f"{r.ms_per_wavefront_wavelength:.3f}", f"{r.speedup_vs_poppy:.1f}",
            f"{r.max_err_vs_converged:.1e}",
        )  # fmt: skip
    console.print(table)
    write_json_atomic(out, meta)
    console.print(f"wrote {out}")
