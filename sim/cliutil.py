"""Command-line plumbing shared by `sim` and `recon`: one-line errors, JSON output."""

from __future__ import annotations

import functools
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console

__all__ = ["UserError", "console", "one_line_errors", "write_json_atomic"]

console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


class UserError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


def one_line_errors(func: F) -> F:
    """Turn expected errors (bad input, bad files) into one red line and exit status 2."""
    from data.schema import DatasetError
    from sim.config import ConfigError

    expected = (UserError, ConfigError, DatasetError, FileNotFoundError, FileExistsError)

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (*expected, PermissionError) as err:
            err_console.print(f"[red]error:[/red] {err}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/yellow]")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def write_json_atomic(path: str | Path, payload: Any) -> Path:
    """Write JSON to `path` through a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(payload, fh, indent=2, default=str)
        fh.write("\n")
    os.chmod(tmp, 0o644)  # mkstemp makes 0600; a report is for everyone to read
    os.replace(tmp, path)
    return path
