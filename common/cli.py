"""Command-line plumbing of `sim` and `recon`: the one error path, the console, progress.

Every command is wrapped in `one_line_errors`: a known failure (`KnownError`, a missing
or unwritable path) prints one line ``error: ...`` on stderr, without markup, and exits
with status 2; an unexpected exception prints its traceback and says that it is a bug.
"""

from __future__ import annotations

import functools
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click
import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

from common.errors import KnownError, UserError

__all__ = [
    "OneLineErrorGroup",
    "UserError",
    "console",
    "err_console",
    "fail_line",
    "one_line_errors",
    "progress_bar",
    "wavelengths_option",
]

console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

try:  # Typer 0.16 and newer carry their own copy of click
    from typer._click import exceptions as _typer_click

    _VENDORED: tuple[type[Exception], ...] = (_typer_click.ClickException,)
    _VENDORED_NO_ARGS: tuple[type[Exception], ...] = (_typer_click.NoArgsIsHelpError,)
except ImportError:  # an older Typer on click itself
    _VENDORED, _VENDORED_NO_ARGS = (), ()
_NO_ARGS_IS_HELP = (
    *(
        (click.exceptions.NoArgsIsHelpError,)
        if hasattr(click.exceptions, "NoArgsIsHelpError")
        else ()
    ),
    *_VENDORED_NO_ARGS,
)
"""A bare group invocation: show the help, as click does."""
_CLICK_ERRORS = (click.ClickException, *_VENDORED)
_PASS_THROUGH = (
    typer.Exit,
    typer.Abort,
    click.exceptions.Exit,
    click.exceptions.Abort,
    *_CLICK_ERRORS,
)
"""Exceptions that end a command on purpose: `one_line_errors` lets them through."""
EXIT_BAD_INPUT = 2
EXIT_BUG = 1
EXIT_INTERRUPTED = 130
_PATH_ERRORS = (
    FileNotFoundError,
    FileExistsError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
)


def wavelengths_option(text: str) -> list[float]:
    """The --wavelengths option: comma-separated numbers [um]; one-line `UserError`."""
    try:
        return [float(v) for v in str(text).split(",")]
    except ValueError:
        raise UserError(f"--wavelengths must be comma-separated numbers in um: {text}") from None


def fail_line(err: BaseException) -> str:
    """The one line a known failure prints (flags spelled as the command line spells them)."""
    text = err.for_command_line() if isinstance(err, KnownError) else _os_line(err)
    lines = [line for line in text.splitlines() if line.strip()] or [type(err).__name__]
    return lines[0]


def _os_line(err: BaseException) -> str:
    """An operating-system path error in words (``[Errno 20] ...`` says little to a user)."""
    if not isinstance(err, OSError) or err.errno is None or err.filename is None:
        return str(err)
    name = err.filename
    if isinstance(err, FileExistsError) and os.path.lexists(name) and not os.path.isdir(name):
        return f"cannot create the folder {name}: a file of that name is in the way"
    if isinstance(err, NotADirectoryError):
        return f"cannot use {name}: part of that path is a file, not a folder"
    if isinstance(err, PermissionError):
        return f"permission denied: {name} (pick a place you can write, or fix its permissions)"
    if isinstance(err, FileNotFoundError):
        return f"no such file or folder: {name}"
    return f"{name}: {err.strerror or err}"


def _print_error(message: str) -> None:
    err_console.print(Text("error: ", style="red") + Text(message), highlight=False, soft_wrap=True)


def one_line_errors(func: F) -> F:
    """Wrap a command: known failures -> one line and exit 2; bugs -> traceback and exit 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except _PASS_THROUGH:
            raise
        except (KnownError, *_PATH_ERRORS) as err:
            _print_error(fail_line(err))
            raise typer.Exit(EXIT_BAD_INPUT) from None
        except KeyboardInterrupt:
            err_console.print(Text("interrupted", style="yellow"))
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except Exception as err:
            traceback.print_exc()
            _print_error(
                f"unexpected {type(err).__name__}: this is a bug in zwfs; please report it "
                "with the traceback above and the command you ran"
            )
            raise typer.Exit(EXIT_BUG) from None

    return wrapper  # type: ignore[return-value]


class OneLineErrorGroup(TyperGroup):
    """A Typer command group whose usage errors (unknown option, bad value) are one line.

    Click prints a usage block and a framed message for them; here they read like every
    other known failure: ``error: ...`` on stderr and exit status 2. `--help` and a bare
    command (which shows the help) behave as before.
    """

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except _NO_ARGS_IS_HELP as err:
            err.show()
            sys.exit(err.exit_code)
        except _CLICK_ERRORS as err:
            hint = f" (see {err.ctx.command_path} --help)" if getattr(err, "ctx", None) else ""
            lines = [line for line in err.format_message().splitlines() if line.strip()]
            _print_error((lines[0] if lines else type(err).__name__) + hint)
            sys.exit(err.exit_code)
        except (click.exceptions.Abort, typer.Abort):
            err_console.print(Text("aborted", style="yellow"))
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


@contextmanager
def progress_bar(total: int, label: str, transient: bool = True) -> Iterator[Callable[[int], None]]:
    """A rich progress bar with a rate and time left; yields ``advance(k)``."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
    )
    task = bar.add_task(label, total=total, rate="")

    def advance(k: int) -> None:
        bar.advance(task, k)
        speed = bar.tasks[task].speed
        bar.update(task, rate=f"{speed:,.0f}/s" if speed else "")

    with bar:
        yield advance
