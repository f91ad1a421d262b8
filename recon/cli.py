"""`recon` command line."""

from __future__ import annotations

import typer

app = typer.Typer(help="Reconstruct wavefronts from ZWFS intensities.", no_args_is_help=True)
