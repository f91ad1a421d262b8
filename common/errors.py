"""Errors that mean "bad input", printed by the command line as one line.

Library code raises a `KnownError` subclass in its own words. Parameter names in a
message are written in braces, ``"{n} must be positive"``: a library user reads
``n must be positive``, the command line shows ``--n must be positive`` (only the CLI
layer speaks flags).
"""

from __future__ import annotations

import re

__all__ = ["KnownError", "UserError", "render_message"]

_PARAMETER = re.compile(r"\{([a-z][a-z_]*)\}")


def render_message(text: str, flags: bool) -> str:
    """`text` with ``{name}`` shown as ``name`` (library) or ``--name`` (command line)."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        return f"--{name.replace('_', '-')}" if flags else name

    return _PARAMETER.sub(one, text)


class KnownError(Exception):
    """A failure the user can fix: bad input, a bad or missing file, a refused request.

    `str(err)` is one line. The command line prints it as ``error: ...`` and exits 2.
    """

    def __str__(self) -> str:
        return render_message(self._text(), flags=False)

    def for_command_line(self) -> str:
        """The message with parameters written as command-line flags."""
        return render_message(self._text(), flags=True)

    def _text(self) -> str:
        return str(self.args[0]) if self.args else type(self).__name__


class UserError(KnownError):
    """Bad input found by a command-line layer (flags that do not go together, say)."""
