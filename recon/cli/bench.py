"""`recon bench`: training samples/s and single-frame latency of the networks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from common.cli import console
from common.io import write_json_atomic
from recon.cli.train import floats

__all__ = ["bench_command"]


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
    from recon.train.bench import default_json_path, print_table, run_bench

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
