"""`recon` command line."""

from __future__ import annotations

import importlib
import json

import typer

app = typer.Typer(help="Reconstruct wavefronts from ZWFS intensities.", no_args_is_help=True)

# Modules that register models or losses when they exist (other parts of `recon`).
_REGISTERING_MODULES = ("recon.nn", "recon.losses", "recon.models")


@app.callback()
def main() -> None:
    """Reconstruct wavefronts from ZWFS intensities."""


def _populate_registries() -> None:
    """Import every module that registers models, blocks or losses; skip absent ones."""
    for name in _REGISTERING_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise


def _fail(message: str) -> typer.Exit:
    """Print a one-line error to stderr; the caller raises the returned exit (code 2)."""
    typer.echo(f"Error: {message}", err=True)
    return typer.Exit(code=2)


@app.command()
def info(
    arch: str | None = typer.Option(None, "--arch", help="Registered model name."),
    npix: int = typer.Option(128, "--npix", min=1, help="Input height and width, pixels."),
    in_ch: int = typer.Option(4, "--in-ch", min=1, help="Input channels (wavelengths)."),
    block: str | None = typer.Option(None, "--block", help="Block name passed to the model."),
    batch: int = typer.Option(1, "--batch", min=1, help="Batch size for the timings."),
    repeats: int = typer.Option(10, "--repeats", min=1, help="Timed forward passes."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    list_all: bool = typer.Option(
        False, "--list", help="List registered models, blocks and losses."
    ),
) -> None:
    """Parameters, GFLOPs and CPU latency of a registered model, or list the registries."""
    _populate_registries()
    from recon.nn import create_model, list_blocks, list_losses, list_models, profile_model

    if list_all:
        names = {"models": list_models(), "blocks": list_blocks(), "losses": list_losses()}
        if as_json:
            typer.echo(json.dumps(names, indent=2))
        else:
            for kind, items in names.items():
                typer.echo(f"{kind}: {', '.join(items) if items else '(none)'}")
        return
    if arch is None:
        raise _fail("give --arch NAME (or --list)")
    if arch.lower() not in list_models():
        raise _fail(f"unknown model {arch!r}; known: {', '.join(list_models())}")
    kwargs: dict[str, object] = {"in_ch": in_ch}
    if block is not None:
        if block.lower() not in list_blocks():
            raise _fail(f"unknown block {block!r}; known: {', '.join(list_blocks())}")
        kwargs["block"] = block
    shape = (batch, in_ch, npix, npix)
    try:
        model = create_model(arch, **kwargs)
        cost = profile_model(model, shape, device="cpu", warmup=2, repeats=repeats)
    except (TypeError, ValueError) as exc:
        raise _fail(f"cannot build or run {arch!r} on input {shape}: {exc}") from None

    record = {"arch": arch, "block": block, **cost.to_dict()}
    if as_json:
        typer.echo(json.dumps(record, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{arch}" + (f" (block {block})" if block else ""))
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_row("input (B, C, H, W)", str(shape))
    table.add_row("params", f"{cost.params:,}")
    table.add_row("GFLOPs", f"{cost.gflops:.3f}")
    table.add_row("CPU latency (median, ms)", f"{cost.latency_ms:.2f}")
    table.add_row("throughput (samples/s)", f"{cost.throughput_per_s:.1f}")
    Console().print(table)


# Commands defined in their own modules register themselves on `app`.
import recon.cli_distill  # noqa: E402
import recon.cli_eval  # noqa: E402
import recon.cli_export  # noqa: E402
import recon.cli_predict  # noqa: E402
import recon.cli_train  # noqa: E402, F401
