"""`recon export`: a trained model as TorchScript or ONNX for real-time AO software."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recon.cli import app
from sim.cliutil import UserError, console, one_line_errors

__all__ = ["export"]


@app.command()
@one_line_errors
def export(
    checkpoint: Annotated[Path, typer.Argument(help="run folder or .ckpt file")],
    fmt: Annotated[str, typer.Option("--format", help="torchscript | onnx")] = "torchscript",
    out: Annotated[Path | None, typer.Option(help="output file [beside the checkpoint]")] = None,
    tolerance: Annotated[float, typer.Option(help="largest allowed relative difference")] = 1e-5,
) -> None:
    """Export the model (normalisation included) and check it against the eager model."""
    from recon.checkpoint import CheckpointError
    from recon.estimator import checkpoint_path
    from recon.export import FORMATS, export_model, max_export_error

    if fmt not in FORMATS:
        raise UserError(f"unknown --format '{fmt}': use one of {', '.join(FORMATS)}")
    ckpt = checkpoint_path(checkpoint)
    try:
        with console.status(f"exporting {ckpt} as {fmt}..."):
            path = export_model(ckpt, fmt, out)  # type: ignore[arg-type]
            err = max_export_error(ckpt, path)
    except (CheckpointError, ImportError) as exc:
        raise UserError(str(exc)) from None
    console.print(f"wrote {path}")
    console.print(f"max |exported - eager| / max |eager| = {err:.1e} (tolerance {tolerance:g})")
    if err > tolerance:
        raise UserError(f"the exported model differs from the eager one by {err:.1e}")
