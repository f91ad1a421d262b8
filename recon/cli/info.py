"""`recon info`: parameters, GFLOPs and CPU latency of a model, or the registries."""

from __future__ import annotations

import json

import typer

from common.cli import UserError, console

__all__ = ["info_command"]


def info_command(
    arch: str | None = typer.Option(None, "--arch", help="Registered model name."),
    npix: int = typer.Option(128, "--npix", min=1, help="Input height and width, pixels."),
    in_ch: int = typer.Option(4, "--in-ch", min=1, help="Input channels (wavelengths)."),
    block: str | None = typer.Option(None, "--block", help="Block name passed to the model."),
    batch: int = typer.Option(1, "--batch", min=1, help="Batch size for the timings."),
    repeats: int = typer.Option(10, "--repeats", min=1, help="Timed forward passes."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    list_all: bool = typer.Option(
        False, "--list", help="List registered models, blocks, losses and baselines."
    ),
) -> None:
    """Parameters, GFLOPs and CPU latency of a registered model, or list the registries."""
    import recon.losses
    import recon.models  # noqa: F401  (register the losses and the reconstruction models)
    from recon.nn import (
        create_model,
        get_block,
        get_model,
        list_blocks,
        list_losses,
        list_models,
        profile_model,
    )

    if list_all:
        from recon.estimators import list_baselines

        names = {
            "models": list_models(),
            "blocks": list_blocks(),
            "losses": list_losses(),
            "baselines": list_baselines(),
        }
        if as_json:
            typer.echo(json.dumps(names, indent=2))
        else:
            for kind, items in names.items():
                typer.echo(f"{kind}: {', '.join(items) if items else '(none)'}")
        return
    if arch is None:
        raise UserError("give --arch NAME (or --list)")
    get_model(arch)  # one line that lists the known models
    kwargs: dict[str, object] = {"in_ch": in_ch}
    if block is not None:
        get_block(block)  # one line that lists the known blocks
        kwargs["block"] = block
    shape = (batch, in_ch, npix, npix)
    try:
        model = create_model(arch, **kwargs)
        cost = profile_model(model, shape, device="cpu", warmup=2, repeats=repeats)
    except (TypeError, ValueError) as exc:
        raise UserError(f"cannot build or run {arch!r} on input {shape}: {exc}") from None

    record = {"arch": arch, "block": block, **cost.to_dict()}
    if as_json:
        typer.echo(json.dumps(record, indent=2))
        return
    from rich.table import Table

    table = Table(title=f"{arch}" + (f" (block {block})" if block else ""))
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_row("input (B, C, H, W)", str(shape))
    table.add_row("params", f"{cost.params:,}")
    table.add_row("GFLOPs", f"{cost.gflops:.3f}")
    table.add_row("CPU latency (median, ms)", f"{cost.latency_ms:.2f}")
    table.add_row("throughput (samples/s)", f"{cost.throughput_per_s:.1f}")
    console.print(table)
