"""Foundations shared by `sim`, `data` and `recon`: errors, config files, command-line
plumbing and provenance. Imports nothing of the project (the bottom of the stack)."""

from common.errors import KnownError, UserError

__all__ = ["KnownError", "UserError"]
