"""Load a `recon train` checkpoint with plain torch (no Lightning): for lab scripts.

    from recon.checkpoint import load_checkpoint
    model, meta = load_checkpoint("runs/gru-20250101-120000/checkpoints/best.ckpt")
    opd_nm = model.estimate(frames)          # (L, H, W) -> (H, W) [nm]
    meta["wavelengths_m"], meta["npix"]      # what the frames must be

The checkpoint is self-describing (STYLE item 13): the key ``"zwfs"`` holds the model
name and arguments, wavelengths [m], pupil sampling [px] and pupil, normalisation
statistics, the training config and the sim config of the data.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from recon.models import ReconModel, build_model
from recon.normalization import NormStats

__all__ = ["CHECKPOINT_KEY", "CheckpointError", "load_checkpoint", "read_meta"]

CHECKPOINT_KEY = "zwfs"  # the same key as recon.lit.CHECKPOINT_KEY (not imported: no Lightning)
_STATE_PREFIX = "model."  # LitRecon holds the ReconModel as `self.model`


class CheckpointError(ValueError):
    """A file is not a readable `recon train` checkpoint; one-line message."""


def _load(path: Path, map_location: str | torch.device) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for a bad file
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: {first}") from None


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The self-describing metadata of a checkpoint (plus ``epoch`` and ``global_step``)."""
    ckpt = _load(Path(path), "cpu")
    if CHECKPOINT_KEY not in ckpt:
        raise CheckpointError(f"{path} is not a recon train checkpoint (no {CHECKPOINT_KEY!r} key)")
    meta = dict(ckpt[CHECKPOINT_KEY])
    meta.update(epoch=ckpt.get("epoch"), global_step=ckpt.get("global_step"))
    return meta


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[ReconModel, dict[str, Any]]:
    """Rebuild the trained model from a checkpoint alone, in eval mode.

    Returns:
        model: `ReconModel`, raw intensities (B, L, H, W) -> OPD (B, 1, H, W) [nm]
            (with EMA training, the EMA weights).
        meta: the checkpoint's metadata (see module docstring), plus epoch and step.
    """
    path = Path(path)
    ckpt = _load(path, map_location)
    if CHECKPOINT_KEY not in ckpt:
        raise CheckpointError(f"{path} is not a recon train checkpoint (no {CHECKPOINT_KEY!r} key)")
    meta = dict(ckpt[CHECKPOINT_KEY])
    meta.update(epoch=ckpt.get("epoch"), global_step=ckpt.get("global_step"))
    kwargs = dict(meta["model_kwargs"])
    n_wl = int(kwargs.pop("in_ch"))
    kwargs.pop("out_ch", None)
    stats = NormStats.from_dict(meta["normalization"])
    import recon.models  # noqa: F401  (registers phenn and gru)

    model = build_model(meta["arch"], kwargs, n_wl, stats)
    state = {
        k.removeprefix(_STATE_PREFIX): v
        for k, v in ckpt["state_dict"].items()
        if k.startswith(_STATE_PREFIX)
    }
    model.load_state_dict(state)
    return model.to(map_location).eval(), meta
