"""Config files: packaged YAML defaults, dotted overrides, one-line validation errors.

Every config of the project is a frozen pydantic model. A wrong value
raises `ConfigError` with one line that names the field and what is allowed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from common.errors import KnownError

__all__ = [
    "WAVELENGTH_RANGE_UM",
    "ConfigError",
    "apply_dotted",
    "check_wavelengths_um",
    "config_file",
    "packaged_configs",
    "read_yaml_mapping",
    "validate_model",
]

WAVELENGTH_RANGE_UM = (0.3, 3.0)
"""Wavelengths any config accepts [um]: the near-UV to the thermal IR of ZWFS work."""

M = TypeVar("M", bound=BaseModel)


class ConfigError(KnownError, ValueError):
    """A configuration value or file is invalid; the message is one line naming the field."""


def check_wavelengths_um(values: Sequence[float], field: str) -> None:
    """Raise `ValueError` (pydantic turns it into a field error) unless every value is in range."""
    if not values:
        raise ValueError(f"{field} must list at least one wavelength")
    lo, hi = WAVELENGTH_RANGE_UM
    bad = [w for w in values if not lo <= w <= hi]
    if bad:
        raise ValueError(f"{field} {bad} outside the allowed [{lo}, {hi}] um")


def packaged_configs(kind: str) -> list[str]:
    """Names of the packaged configs of `kind` ("sim" or "recon")."""
    folder = resources.files("configs") / kind
    names = (p.name for p in folder.iterdir())
    return sorted(n.removesuffix(".yaml") for n in names if n.endswith(".yaml"))


def config_file(name_or_path: str | Path, kind: str) -> Path:
    """A YAML path as given, or the packaged config `name` of `kind` (no suffix: a name)."""
    path = Path(name_or_path)
    if path.suffix:
        if not path.is_file():
            raise ConfigError(f"{kind} config file not found: {path}")
        return path
    packaged = resources.files("configs") / kind / f"{name_or_path}.yaml"
    if not packaged.is_file():
        known = ", ".join(packaged_configs(kind))
        raise ConfigError(f"unknown {kind} config {str(name_or_path)!r}; known: {known}, or a path")
    return Path(str(packaged))


def read_yaml_mapping(name_or_path: str | Path, kind: str) -> dict[str, Any]:
    """The mapping in a config file given by path or packaged name; one-line errors."""
    path = config_file(name_or_path, kind)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        first = f"{err}".splitlines()[0]
        raise ConfigError(f"config file {path} does not parse as YAML: {first}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping, not {type(data).__name__}")
    return data


def apply_dotted(data: dict[str, Any], dotted: Mapping[str, Any], what: str) -> dict[str, Any]:
    """`data` with values replaced by dotted names (``{"optim.lr": 1e-4}``); None is skipped."""
    for key, value in dotted.items():
        if value is None:
            continue
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            if not isinstance(node.get(p), dict):
                raise ConfigError(f"unknown {what} config field '{key}'")
            node = node[p]
        if leaf not in node:
            raise ConfigError(f"unknown {what} config field '{key}'")
        node[leaf] = value
    return data


def _one_line(err: ValidationError, what: str) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    msg = first["msg"].removeprefix("Value error, ")
    where = f"{loc}: " if loc else ""
    extra = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"invalid {what} config: {where}{msg}{extra}"


def validate_model(cls: type[M], data: Any, what: str) -> M:
    """Build a pydantic config from plain data; raise `ConfigError` with a one-line message."""
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_one_line(err, what)) from None
