"""`sim` command line."""

from __future__ import annotations

import typer

app = typer.Typer(help="Simulate Zernike wavefront sensor (ZWFS) data.", no_args_is_help=True)
