"""Registered reconstruction networks, the wrapper that runs them in nm, their checkpoints.

Importing this package registers ``phenn`` and ``gru`` in `recon.nn`'s model registry.
`build_model` turns any registered model into a `ReconModel`; `load_checkpoint` rebuilds
a trained one from its checkpoint alone, with plain torch.
"""

from recon.models.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_KEY,
    CheckpointError,
    load_checkpoint,
    read_meta,
    resolve_checkpoint,
)
from recon.models.gru import ConvGRUCell, WavelengthGRUNet, gru
from recon.models.phenn import PhENN, phenn
from recon.models.recon_model import ModelOutput, NormStats, ReconModel, build_model

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_KEY",
    "CheckpointError",
    "ConvGRUCell",
    "ModelOutput",
    "NormStats",
    "PhENN",
    "ReconModel",
    "WavelengthGRUNet",
    "build_model",
    "gru",
    "load_checkpoint",
    "phenn",
    "read_meta",
    "resolve_checkpoint",
]
