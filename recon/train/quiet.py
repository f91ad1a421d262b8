"""Quiet training output: drop Lightning's lines that a user of `recon train` cannot act on.

`quiet_lightning()` silences the hardware banner ("GPU available: False, used: False",
TPU/HPU lines), the "💡 Tip" advertisements, "LOCAL_RANK ... CUDA_VISIBLE_DEVICES" and
the warnings about DataLoader workers (the data module chooses them), the logging
interval on short epochs, and known deprecations inside Lightning and torch. Errors and
warnings that mean something (a NaN loss, a checkpoint that does not load) still show.
"""

from __future__ import annotations

import logging
import warnings

__all__ = ["quiet_lightning"]

_WARNINGS = (
    r".*does not have many workers.*",
    r".*The number of training batches .* is smaller than the logging interval.*",
    r".*log_every_n_steps.*",
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",
    r".*LeafSpec.*is deprecated.*",
    r".*Checkpoint directory .* exists and is not empty.*",
    r".*`training_step` returned `None`.*",
    r".*Consider setting `persistent_workers=True`.*",
    r".*The '__version__' attribute is deprecated.*",
)
_INFO_LINES = (
    "GPU available",
    "TPU available",
    "HPU available",
    "IPU available",
    "💡 Tip",
    "Tip:",
    "LOCAL_RANK",
    "`Trainer.fit` stopped",
    "Using default `ModelCheckpoint`",
    "Restoring states from the checkpoint path",
    "Restored all states from the checkpoint",
)


class _DropKnownLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not any(marker in text for marker in _INFO_LINES)


_FILTER = _DropKnownLines()


def quiet_lightning() -> None:
    """Install the filters (idempotent); call it before building the Trainer."""
    for pattern in _WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in (
        "lightning.pytorch",
        "lightning.pytorch.utilities.rank_zero",
        "lightning.pytorch.accelerators.cuda",
        "lightning.fabric",
        "lightning.fabric.utilities.rank_zero",
        "lightning.pytorch.trainer.connectors.signal_connector",
    ):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
        for handler in logger.handlers:
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)
