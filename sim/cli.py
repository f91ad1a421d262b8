"""`sim` command line: generate datasets, show them, check and benchmark the engine.

Only typer, rich's console and this file load for `sim --help`: each command imports
what it needs (the config models, torch, the tables) when it runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from common.cli import (
    OneLineErrorGroup,
    UserError,
    console,
    one_line_errors,
    progress_bar,
    wavelengths_option,
)
from common.io import write_json_atomic
from sim.system_cli import system_command

app = typer.Typer(
    cls=OneLineErrorGroup,
    help="Simulate Zernike wavefront sensor (ZWFS) data.",
    no_args_is_help=True,
    add_completion=False,
)

app.command("system")(system_command)

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
    from rich.table import Table

    from sim.check import PUPIL_OVERSAMPLE, rows_as_dicts, run_check
    from sim.config import load_sim_config

    cfg = load_sim_config(config)
    try:
        rms_nm = [float(v) for v in rms.split(",")]
    except ValueError:
        raise UserError(f"--rms must be comma-separated numbers [nm], got {rms!r}") from None
    sources = ["engine"] if cfg.pupil.geometry == "circular" else ["engine", "poppy"]
    with console.status("running the engine and POPPY on the same wavefronts..."):
        rows = [r for s in sources for r in run_check(cfg, rms_nm, seed, converged, pupil=s)]
    table = Table(
        title=f"ZWFS engine vs POPPY SAMC ({cfg.pupil.npix} px, {cfg.pupil.geometry} pupil, "
        f"{cfg.precision}, q = {cfg.focal.samples_per_lambda0_d:g}/(lambda0/D), "
        f"{'grey' if cfg.focal.antialias else 'hard'} dot edge); pupil: POPPY propagates the "
        f"engine's, or its own aperture ({PUPIL_OVERSAMPLE}x oversampled)"
    )
    for col in ("pupil", "um", "RMS nm", "max |dI| / peak", "vs q=256", "tolerance"):
        table.add_column(col, justify="right")
    table.add_column("ok")
    for r in rows:
        conv = "-" if r.converged_max_err is None else f"{r.converged_max_err:.1e}"
        table.add_row(
            r.pupil, f"{r.wavelength_um:.2f}", f"{r.rms_nm:g}", f"{r.max_abs_err:.1e}", conv,
            f"{r.tolerance:.1e}", "[green]yes[/]" if r.passed else "[red]NO[/]",
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
    batch: Annotated[int, typer.Option(help="engine batch (small batches stay in cache)")] = 8,
    threads: Annotated[int, typer.Option(help="threads for every peer")] = 1,
    repeats: Annotated[int, typer.Option(help="timed runs per peer (the best is kept)")] = 3,
    out: Annotated[Path | None, typer.Option(help="JSON output [bench/sim_bench*.json]")] = None,
    generate: Annotated[
        bool, typer.Option("--generate", help="time `sim generate --n N` against h5py alone")
    ] = False,
    device: Annotated[str, typer.Option(help="cpu | cuda | auto (--generate)")] = "auto",
) -> None:
    """Throughput per core of the engine, POPPY and hcipy on the same wavefronts.

    With --generate: `sim generate` end to end (default n 8000) against the floor of
    writing the same arrays with h5py alone, and the projected POPPY time.
    """
    from rich.table import Table

    from sim.config import load_sim_config
    from sim.engine_bench import run_bench

    cfg = load_sim_config(config)
    if generate:
        _bench_generate(cfg, n if n != 256 else 8000, batch, device, out)
        return
    with console.status(f"timing {n} wavefronts (engine) and {n_reference} (references)..."):
        rows, meta = run_bench(
            cfg, n_engine=n, n_reference=n_reference, batch=batch, threads=threads,
            repeats=repeats,
        )  # fmt: skip
    table = Table(
        title=f"ZWFS simulation, {cfg.pupil.npix} px, {len(cfg.wavelengths_um)} wavelengths, "
        f"{threads} thread(s), best of {repeats}; ms/wf/l: per wavefront and wavelength; "
        "max errors of the peak against a q=256 reference, POPPY and the engine's MFT"
    )
    for col in ("peer", "samples", "ms/wf/l", "x POPPY", "vs q=256", "vs POPPY", "vs MFT"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            r.peer, str(r.samples), f"{r.ms_per_wavefront_wavelength:.3f}",
            f"{r.speedup_vs_poppy:.1f}", f"{r.max_err_vs_converged:.1e}",
            f"{r.max_err_vs_poppy:.1e}", f"{r.max_err_vs_mft:.1e}",
        )  # fmt: skip
    console.print(table)
    dropped = ", ".join(f"{d:.1e}" for d in meta["low_rank_first_dropped"])
    console.print(
        f"engine: the dot as {meta['low_rank_terms']} low-rank terms on the lit pupil; "
        f"first singular value left out, of the largest, per wavelength: {dropped}"
    )
    out = out or Path("bench/sim_bench.json")
    write_json_atomic(out, meta)
    console.print(f"wrote {out}")


def _bench_generate(cfg, n: int, batch: int, device: str, out: Path | None) -> None:
    from rich.table import Table

    from sim.engine_bench import run_generate_bench
    from sim.generate import resolve_device

    with console.status(f"generating {n} samples, then writing them with h5py alone..."):
        result = run_generate_bench(
            cfg, n, Path("bench"), batch=max(batch, 16), device=resolve_device(device)
        )
    title = f"sim generate --n {n}: {cfg.pupil.npix} px, {len(cfg.wavelengths_um)} wavelengths"
    table = Table(title=f"{title}, {result['file_gb']:.2f} GB")
    for col in ("what", "seconds", "samples/s", "x floor"):
        table.add_column(col, justify="right")
    floor = result["h5py_floor_s"]
    for name, key in (("sim generate", "generate_s"), ("h5py alone (floor)", "h5py_floor_s"),
                      ("POPPY (projected)", "poppy_projected_s")):  # fmt: skip
        t = result[key]
        table.add_row(name, f"{t:.1f}", f"{n / t:,.0f}", f"{t / floor:.2f}")
    console.print(table)
    out = out or Path("bench/sim_bench_generate.json")
    write_json_atomic(out, result)
    console.print(f"wrote {out}")


def _overrides(**given: object) -> dict:
    """Dotted config overrides from the command-line options that were given."""
    names = {
        "npix": "pupil.npix",
        "wavelengths": "wavelengths_um",
        "rms_max": "aberration.rms_max_nm",
        "photons": "detector.photons",
        "read_noise": "detector.read_noise_e",
        "aberration": "aberration.kind",
        "screen_index": "aberration.screen_index",
        "high_order_rms": "aberration.high_order_rms_nm",
        "amplitude_rms": "pupil.amplitude_rms",
        "pupil": "pupil.geometry",
        "segment_piston": "aberration.segment_piston_nm",
        "segment_tiptilt": "aberration.segment_tiptilt_nm",
        "segment_scale": "aberration.segment_scale",
    }
    out = {}
    for key, value in given.items():
        if value is None:
            continue
        if key == "wavelengths":
            value = wavelengths_option(value)
        out[names[key]] = value
    return out


@app.command()
@one_line_errors
def generate(
    n: Annotated[int, typer.Option("--n", help="number of samples")] = 8000,
    split: Annotated[str, typer.Option(help="train | val | test (enters the seed)")] = "train",
    out: Annotated[Path | None, typer.Option(help="output file [datasets/<split>.h5]")] = None,
    config: ConfigOpt = "paper",
    seed: Annotated[int | None, typer.Option(help="base seed [config's]")] = None,
    npix: Annotated[int | None, typer.Option(help="pixels across the pupil")] = None,
    wavelengths: Annotated[str | None, typer.Option(help="comma-separated, um")] = None,
    rms_max: Annotated[float | None, typer.Option(help="largest OPD RMS [nm]")] = None,
    photons: Annotated[float | None, typer.Option(help="photons in the clear pupil")] = None,
    read_noise: Annotated[float | None, typer.Option(help="read noise [e-]")] = None,
    aberration: Annotated[
        str | None, typer.Option(help="modes | screen | mixture | blend (of the three)")
    ] = None,
    screen_index: Annotated[
        float | None, typer.Option(help="screens: PSD proportional to f^-index [2]")
    ] = None,
    high_order_rms: Annotated[
        float | None, typer.Option(help="mixture: RMS of the screen beyond the modes [nm]")
    ] = None,
    amplitude_rms: Annotated[
        float | None, typer.Option(help="illumination: fractional RMS of the clear pupil [0]")
    ] = None,
    pupil: Annotated[
        str | None, typer.Option(help="circular | obstructed | segmented [config's]")
    ] = None,
    segment_piston: Annotated[
        float | None, typer.Option(help="segmented: pistons uniform in +- this [nm OPD]")
    ] = None,
    segment_tiptilt: Annotated[
        float | None, typer.Option(help="segmented: tip, tilt uniform in +- this [nm RMS]")
    ] = None,
    segment_scale: Annotated[
        str | None,
        typer.Option(help="segmented: fixed | uniform (each sample's ranges x U[0, 1])"),
    ] = None,
    device: Annotated[str, typer.Option(help="cpu | cuda | auto")] = "auto",
    batch_size: Annotated[int, typer.Option(help="samples per batch")] = 16,
    workers: Annotated[int, typer.Option(help="processes, one shard each")] = 1,
    scheduler: Annotated[str | None, typer.Option(help="Dask scheduler address")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace an existing file")] = False,
    resume: Annotated[bool, typer.Option(help="finish an interrupted run")] = False,
    fsync: Annotated[bool, typer.Option(help="make each batch durable against power loss")] = False,
    engine: Annotated[
        str, typer.Option(help="fast (batched, torch) | poppy (POPPY itself: the slow reference)")
    ] = "fast",
) -> None:
    """Simulate a ZWFS dataset (HDF5 that xarray opens) from a config.

    The file is written as <out>.part and renamed when complete; a run killed at any
    moment continues with --resume to the same file an uninterrupted run writes.
    """
    from sim.config import load_sim_config
    from sim.generate import plan_generation, run_generation

    cfg = load_sim_config(config)
    changes = _overrides(
        npix=npix, wavelengths=wavelengths, rms_max=rms_max, photons=photons,
        read_noise=read_noise, aberration=aberration, screen_index=screen_index,
        high_order_rms=high_order_rms, amplitude_rms=amplitude_rms, pupil=pupil,
        segment_piston=segment_piston, segment_tiptilt=segment_tiptilt,
        segment_scale=segment_scale,
    )  # fmt: skip
    cfg = cfg.with_overrides(**changes) if changes else cfg
    plan = plan_generation(
        cfg, out or Path("datasets") / f"{split}.h5", n, split=split, seed=seed,
        batch_size=batch_size, device=device, overwrite=overwrite, resume=resume,
        workers=workers, scheduler=scheduler, fsync=fsync, engine=engine,
    )  # fmt: skip
    console.print(
        f"{n} samples of '{split}', {cfg.pupil.npix} px, wavelengths {cfg.wavelengths_um} um, "
        f"RMS {cfg.aberration.rms_min_nm:g}-{cfg.aberration.rms_max_nm:g} nm "
        f"({cfg.aberration.kind}), {cfg.pupil.geometry} pupil -> {plan.out} "
        f"(~{plan.size_bytes / 1e9:.2f} GB)"
    )
    if plan.fresh_resume:
        console.print(f"--resume: no partial run of {plan.out} to continue; starting it")
    with progress_bar(n, "simulating", transient=False) as advance:
        path = run_generation(plan, progress=advance)
    from data.readers import dataset_bytes

    console.print(f"wrote {path} ({dataset_bytes(path) / 1e9:.2f} GB)")


@app.command()
@one_line_errors
def show(
    path: Annotated[Path, typer.Argument(help="dataset file")],
    out: Annotated[Path | None, typer.Option(help="PNG [<path>.png]")] = None,
    examples: Annotated[int, typer.Option(help="samples to draw")] = 4,
) -> None:
    """Summary of a dataset and a PNG of a few samples and the RMS histogram."""
    from rich.table import Table

    from sim.show import show_dataset

    if not path.is_file():
        raise FileNotFoundError(f"no dataset at {path}")
    png = out or path.with_suffix(".png")
    summary = show_dataset(path, png, n_examples=examples)
    table = Table(title=str(path), show_header=False)
    for key, value in summary.items():
        table.add_row(str(key), str(value))
    console.print(table)
    console.print(f"wrote {png}")
