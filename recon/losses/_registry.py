"""The one place where the loss modules get `register_loss` (`recon.nn.registry` owns the
registry: ``create_loss(name, **kw)``, ``list_losses()``)."""

from recon.nn.registry import register_loss

__all__ = ["register_loss"]
