"""`recon digits`: the block library on a second task, scikit-learn's handwritten digits."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from common.cli import console
from common.io import write_json_atomic

__all__ = ["digits_command"]


def digits_command(
    quick: Annotated[bool, typer.Option(help="the reduced study that the tests run")] = False,
    epochs: Annotated[
        int | None, typer.Option(min=1, help="training epochs of every model [40; quick 6]")
    ] = None,
    seeds: Annotated[int | None, typer.Option(min=1, help="seeds per block [3; quick 1]")] = None,
    threads: Annotated[int, typer.Option(min=1, help="torch CPU threads")] = 1,
    out: Annotated[Path, typer.Option(help="JSON of every number")] = Path("reports/digits.json"),
) -> None:
    """Digit classifiers from three blocks; one-shot class addition; distillation."""
    import torch

    from recon.digits import load_digits_split
    from recon.digits.study import StudyConfig, quick_config, run_study, tables

    torch.set_num_threads(threads)
    cfg = quick_config() if quick else StudyConfig()
    if epochs is not None:
        cfg = replace(cfg, fit=replace(cfg.fit, epochs=epochs))
    if seeds is not None:
        cfg = replace(cfg, seeds=tuple(range(seeds)))
    result = run_study(load_digits_split(), cfg)
    result["threads"] = threads
    typer.echo(tables(result))
    console.print(f"JSON: {write_json_atomic(out, result)}")
