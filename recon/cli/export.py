"""`recon export`: a trained model as TorchScript, ONNX or AOTInductor for real-time AO software."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from common.cli import UserError, console

__all__ = ["export_command"]


def export_command(
    checkpoint: Annotated[Path, typer.Argument(help="run folder or .ckpt file")],
    fmt: Annotated[
        str, typer.Option("--format", help="torchscript | onnx | aoti (compiled .pt2)")
    ] = "torchscript",
    out: Annotated[Path | None, typer.Option(help="output file [beside the checkpoint]")] = None,
    tolerance: Annotated[float, typer.Option(help="largest allowed relative difference")] = 1e-5,
    device: Annotated[str, typer.Option(help="aoti: the device it is compiled for")] = "cpu",
) -> None:
    """Export the model (normalisation included) and check it against the eager model."""
    from recon.models import resolve_checkpoint
    from recon.models.export import (
        FORMATS,
        batch1_latency_ms,
        export_model,
        max_export_error,
    )

    if fmt not in FORMATS:
        raise UserError(f"unknown --format '{fmt}': use one of {', '.join(FORMATS)}")
    ckpt = resolve_checkpoint(checkpoint)
    try:
        with console.status(f"exporting {ckpt} as {fmt}..."):
            path = export_model(ckpt, fmt, out, device)  # type: ignore[arg-type]
            err = max_export_error(ckpt, path)
    except ImportError as exc:
        raise UserError(f"{exc}: pip install 'zwfs[export]'") from None
    except Exception as exc:  # AOTInductor: no C++ compiler, an unsupported op
        if fmt != "aoti":
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"AOTInductor failed ({first}); it needs a C++ compiler") from None
    console.print(f"wrote {path}")
    console.print(f"max |exported - eager| / max |eager| = {err:.1e} (tolerance {tolerance:g})")
    if err > tolerance:
        raise UserError(f"the exported model differs from the eager one by {err:.1e}")
    lat = batch1_latency_ms(ckpt, path)
    console.print(
        f"batch-1 latency (median, host NumPy in and out): eager {lat['eager_ms']:.2f} ms, "
        f"{fmt} {lat['exported_ms']:.2f} ms"
    )
