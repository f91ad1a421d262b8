"""Name registries for blocks, models and losses (the timm `register_model` pattern).

Configs and command lines choose a component by string: ``create_block("residual", 32, 64)``,
``create_model("unet", in_ch=4)``, ``create_loss("npcc")``. A component registers itself
with a decorator where it is defined::

    @register_block("residual")
    class ResidualBlock(nn.Module): ...

    @register_loss("npcc")
    class NPCCLoss(nn.Module): ...

Conventions: a block is built as ``Block(in_ch, out_ch, **kw)``; a model factory accepts at
least the keywords ``in_ch`` and ``out_ch``; a loss is built as ``Loss(**kw)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar, overload

import torch.nn as nn

from common.errors import KnownError

__all__ = [
    "BLOCKS",
    "LOSSES",
    "MODELS",
    "Registry",
    "UnknownNameError",
    "create_block",
    "create_loss",
    "create_model",
    "get_block",
    "get_loss",
    "get_model",
    "list_blocks",
    "list_losses",
    "list_models",
    "register_block",
    "register_loss",
    "register_model",
]

F = TypeVar("F", bound=Callable[..., Any])


class UnknownNameError(KnownError, KeyError, ValueError):
    """A name that is not in a registry; one line that lists the known names.

    A `KeyError` and a `ValueError` for library callers, a `KnownError` for the command line.
    """


class Registry(Generic[F]):
    """A mapping from lower-case names to constructors (classes or factory functions).

    Args:
        kind: what is registered, used in error messages ("block", "model", "loss").
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, F] = {}

    @overload
    def register(self, name: str) -> Callable[[F], F]: ...

    @overload
    def register(self, name: F) -> F: ...

    def register(self, name: str | F) -> Callable[[F], F] | F:
        """Decorator: ``@reg.register("name")``, or bare ``@reg.register`` (uses ``__name__``).

        Registering a different object under a name already taken raises `ValueError`;
        re-registering the same definition (same module and qualified name, e.g. after a
        module reload) replaces it.
        """
        if callable(name):
            return self._add(name.__name__.lower(), name)

        def decorator(obj: F) -> F:
            return self._add(str(name), obj)

        return decorator

    def _add(self, name: str, obj: F) -> F:
        key = name.lower()
        old = self._entries.get(key)
        if old is not None and _qualname(old) != _qualname(obj):
            raise ValueError(
                f"{self.kind} name {key!r} is already registered to {_qualname(old)}; "
                f"cannot register {_qualname(obj)}"
            )
        self._entries[key] = obj
        return obj

    def get(self, name: str) -> F:
        """The constructor registered under `name` (case-insensitive)."""
        try:
            return self._entries[name.lower()]
        except KeyError:
            known = ", ".join(self.names()) or "(none registered)"
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Build the component registered under `name` with the given arguments."""
        return self.get(name)(*args, **kwargs)

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


BLOCKS: Registry[Callable[..., nn.Module]] = Registry("block")
MODELS: Registry[Callable[..., nn.Module]] = Registry("model")
LOSSES: Registry[Callable[..., nn.Module]] = Registry("loss")


def register_block(name: Any) -> Any:
    """Register a block class ``Block(in_ch, out_ch, **kw)``: ``@register_block("name")``."""
    return BLOCKS.register(name)


def register_model(name: Any) -> Any:
    """Register a model class or factory taking ``in_ch``, ``out_ch`` keywords."""
    return MODELS.register(name)


def register_loss(name: Any) -> Any:
    """Register a loss class or factory ``Loss(**kw)``: ``@register_loss("npcc")``."""
    return LOSSES.register(name)


def create_block(name: str, in_ch: int, out_ch: int, **kwargs: Any) -> nn.Module:
    """Build block `name` mapping (B, in_ch, H, W) -> (B, out_ch, H/stride, W/stride)."""
    return BLOCKS.create(name, in_ch, out_ch, **kwargs)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build registered model `name` with keyword arguments (e.g. ``in_ch=4, out_ch=1``)."""
    return MODELS.create(name, **kwargs)


def create_loss(name: str, **kwargs: Any) -> nn.Module:
    """Build registered loss `name` with keyword arguments."""
    return LOSSES.create(name, **kwargs)


def get_block(name: str) -> Callable[..., nn.Module]:
    """The block class registered under `name`."""
    return BLOCKS.get(name)


def get_model(name: str) -> Callable[..., nn.Module]:
    """The model class or factory registered under `name`."""
    return MODELS.get(name)


def get_loss(name: str) -> Callable[..., nn.Module]:
    """The loss class or factory registered under `name`."""
    return LOSSES.get(name)


def list_blocks() -> list[str]:
    """Sorted names of registered blocks."""
    return BLOCKS.names()


def list_models() -> list[str]:
    """Sorted names of registered models."""
    return MODELS.names()


def list_losses() -> list[str]:
    """Sorted names of registered losses."""
    return LOSSES.names()
