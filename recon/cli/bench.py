"""`recon bench`: training samples/s and single-frame latency of the networks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from common.cli import console
from common.io import write_json_atomic
from recon.cli.train import floats

__all__ = ["bench_command", "bench_refine_command"]


def bench_command(
    arch: Annotated[str, typer.Option(help="comma-separated architectures")] = "phenn,gru",
    sizes: Annotated[str, typer.Option(help="comma-separated samplings [px]")] = "64,128",
    config: Annotated[
        str | None, typer.Option(help="config for the widths [each arch's own]")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="training batch size")] = 16,
    steps: Annotated[int, typer.Option(help="timed training steps")] = 3,
    repeats: Annotated[int, typer.Option(help="timed inference passes")] = 10,
    device: Annotated[
        str | None, typer.Option(help="cpu | cuda [cpu, and cuda if present]")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="JSON [bench/recon_bench.json]")] = None,
) -> None:
    """Training samples/s and single-frame latency of phenn and gru at 64 and 128 px."""
    from recon.train.network_bench import default_json_path, print_table, run_bench
    from recon.train.quiet import quiet_lightning

    quiet_lightning()
    rows = run_bench(
        archs=[a.strip() for a in arch.split(",") if a.strip()],
        sizes=[int(s) for s in floats(sizes, "--sizes")],
        config=config,
        batch_size=batch_size,
        steps=steps,
        repeats=repeats,
        devices=None if device is None else [device],
    )
    print_table(rows)
    path = write_json_atomic(out or default_json_path(), {"results": rows})
    console.print(f"JSON: {path}")


def bench_refine_command(
    sizes: Annotated[str, typer.Option(help="comma-separated samplings [px]")] = "64,128",
    n: Annotated[int, typer.Option(help="samples per sampling")] = 64,
    batch_size: Annotated[int, typer.Option(help="samples per fit")] = 32,
    rms_max: Annotated[float, typer.Option(help="true OPD RMS drawn in 0-this [nm]")] = 500.0,
    start_error: Annotated[
        float, typer.Option(help="start off by this x RMS + 5 nm (a network's start)")
    ] = 0.2,
    device: Annotated[
        str | None, typer.Option(help="cpu | cuda [cpu, and cuda if present]")
    ] = None,
    chunk: Annotated[
        int | None,
        typer.Option(help="samples per Jacobian product, 0: the batch [the device's plan]"),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="JSON [bench/refine_bench.json]")] = None,
) -> None:
    """Modal refinement: Jacobian ms/sample against torch.func, and the whole fit."""
    from common.errors import UserError
    from recon.refine.fit_bench import bench_refine, default_json_path, print_table

    if chunk is not None and chunk < 0:
        raise UserError(f"--chunk must be >= 0 (0: the whole batch), got {chunk}")
    if n < 1 or batch_size < 1:
        raise UserError(f"--n and --batch-size must be at least 1, got {n} and {batch_size}")
    if not 0 <= rms_max <= 2000 or start_error < 0:
        raise UserError(
            f"--rms-max must be in 0-2000 nm and --start-error >= 0, got {rms_max}, {start_error}"
        )
    rows = bench_refine(
        sizes=[int(s) for s in floats(sizes, "--sizes")],
        devices=None if device is None else [device],
        n=n,
        batch_size=batch_size,
        rms_max=rms_max,
        start_error=start_error,
        chunk=chunk,
    )
    print_table(rows)
    path = write_json_atomic(out or default_json_path(), {"results": rows})
    console.print(f"JSON: {path}")
