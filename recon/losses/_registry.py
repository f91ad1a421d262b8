"""The one place where the loss modules get `register_loss`.

`recon.nn.registry` owns the registry (`register_loss(name)` decorator and
`create_loss(name, **kw)`). While it is absent (or cannot be imported), a no-op
decorator stands in so that the loss modules still import and work; they are then
simply not registered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

__all__ = ["register_loss"]

_T = TypeVar("_T")

try:
    from recon.nn.registry import register_loss
except ImportError:  # registry not there yet: keep the classes, skip registration

    def register_loss(name: str) -> Callable[[_T], _T]:  # type: ignore[no-redef]
        """No-op stand-in for `recon.nn.registry.register_loss(name)`."""
        return lambda cls: cls
