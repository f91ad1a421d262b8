"""The checkpoint format of a trained model, and the one loader (plain torch, no Lightning).

    from recon.models import load_checkpoint
    model, meta = load_checkpoint("runs/gru-20250101-120000")   # run folder or .ckpt
    meta["wavelengths_m"], meta["npix"]                         # what the frames must be

A checkpoint is self-describing: its key ``"zwfs"`` holds the format
name and version, the model name and arguments, wavelengths [m], pupil sampling [px]
and pupil, normalisation statistics, the training config and the data's sim config.
Training writes that key (`recon.train.run.checkpoint_meta`); every reader comes here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

import recon.models.gru
import recon.models.phenn  # noqa: F401  (register the models a checkpoint may name)
from common.errors import KnownError
from recon.models.recon_model import NormStats, ReconModel, build_model

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_KEY",
    "CheckpointError",
    "load_checkpoint",
    "read_meta",
    "resolve_checkpoint",
]

CHECKPOINT_KEY = "zwfs"
"""Key of the self-describing metadata inside a checkpoint."""
CHECKPOINT_FORMAT = ("zwfs-recon-checkpoint", 1)
"""(name, version) written into every checkpoint and checked on load."""
_STATE_PREFIX = "model."  # the LightningModule holds the ReconModel as `self.model`


class CheckpointError(KnownError, ValueError):
    """A file is not a readable checkpoint of this version; one-line message."""


def resolve_checkpoint(run_dir_or_ckpt: str | os.PathLike) -> Path:
    """A checkpoint file, or a run folder's ``checkpoints/best.ckpt`` (else ``last.ckpt``)."""
    p = Path(run_dir_or_ckpt)
    if p.is_dir():
        for name in ("best.ckpt", "last.ckpt"):
            if (p / "checkpoints" / name).is_file():
                return p / "checkpoints" / name
        raise FileNotFoundError(f"run folder {p} has no checkpoints/best.ckpt or last.ckpt")
    if not p.is_file():
        raise FileNotFoundError(f"no checkpoint or run folder at {p}")
    return p


def _read(path: Path, map_location: str | torch.device) -> dict[str, Any]:
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for a bad file
        import zipfile

        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        if not zipfile.is_zipfile(path):  # torch.save writes a zip archive
            first = "not a PyTorch checkpoint, or a truncated one (an interrupted copy or save?)"
        elif first.startswith("Weights only load failed"):
            first = "it holds objects other than tensors and plain values (not a recon checkpoint)"
        raise CheckpointError(f"cannot read checkpoint {path}: {first}") from None


def _checked_meta(path: Path, ckpt: dict[str, Any]) -> dict[str, Any]:
    """The metadata of a checkpoint after checking its format name and version."""
    if not isinstance(ckpt, dict) or CHECKPOINT_KEY not in ckpt:
        raise CheckpointError(f"{path} is not a recon train checkpoint (no {CHECKPOINT_KEY!r} key)")
    meta = dict(ckpt[CHECKPOINT_KEY])
    name, version = CHECKPOINT_FORMAT
    found = (meta.get("format"), meta.get("format_version"))
    if found != (name, version):
        raise CheckpointError(
            f"{path} is a checkpoint of format {found[0]!r} version {found[1]}; this zwfs "
            f"reads {name!r} version {version}: load it with the zwfs release that wrote it"
        )
    meta.update(epoch=ckpt.get("epoch"), global_step=ckpt.get("global_step"))
    return meta


def _classic_gru(state_dict: dict[str, Any]) -> bool:
    """True for GRU weights of the two-convolution cell (`cells.*.candidate.*` keys)."""
    return any(".candidate." in key for key in state_dict)


def _gru_recurrent_scales(state_dict: dict[str, Any]) -> int | None:
    """The GRU's `recurrent_scales` from its weights: the number of ConvGRU cells when
    there are stacked fine scales (`stacked.*` keys), else None (a GRU at every scale)."""
    if not any(".stacked." in key for key in state_dict):
        return None
    return len({key.split(".cells.")[1].split(".")[0] for key in state_dict if ".cells." in key})


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The checked metadata of a checkpoint (plus ``epoch`` and ``global_step``)."""
    ckpt_path = resolve_checkpoint(path)
    return _checked_meta(ckpt_path, _read(ckpt_path, "cpu"))


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[ReconModel, dict[str, Any]]:
    """Rebuild the trained model from a checkpoint (file or run folder), in eval mode.

    Returns:
        model: `ReconModel`, raw intensities (B, L, H, W) -> OPD (B, 1, H, W) [nm]
            (with weight averaging in training, the averaged weights).
        meta: the checkpoint's metadata (see module docstring), plus epoch, step and
            ``checkpoint`` (the file read).
    """
    ckpt_path = resolve_checkpoint(path)
    ckpt = _read(ckpt_path, map_location)
    meta = _checked_meta(ckpt_path, ckpt)
    meta["checkpoint"] = str(ckpt_path)
    kwargs = dict(meta["model_kwargs"])
    if meta["arch"] == "gru" and "cell" not in kwargs and _classic_gru(ckpt["state_dict"]):
        kwargs["cell"] = "classic"  # written before the fused ConvGRU cell existed
    if meta["arch"] == "gru" and "recurrent_scales" not in kwargs:
        # the default changed (None -> 1): the weights say which layout they are
        kwargs["recurrent_scales"] = _gru_recurrent_scales(ckpt["state_dict"])
    n_wl = int(kwargs.pop("in_ch"))
    kwargs.pop("out_ch", None)
    stats = NormStats.from_dict(meta["normalization"])
    model = build_model(meta["arch"], kwargs, n_wl, stats)
    state = {
        k.removeprefix(_STATE_PREFIX): v
        for k, v in ckpt["state_dict"].items()
        if k.startswith(_STATE_PREFIX)
    }
    model.load_state_dict(state)
    return model.to(map_location).eval(), meta
