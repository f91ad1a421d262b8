"""Small shared builders for the simulation tests."""

from __future__ import annotations

import torch

from sim.aberrations import sample_opd
from sim.config import SimConfig, load_sim_config
from sim.zwfs import ZWFSModel


def paper(**overrides: object) -> SimConfig:
    """The paper config with dotted overrides."""
    return load_sim_config("paper").with_overrides(**overrides)


def random_opd(model: ZWFSModel, rms_nm: list[float], seed: int = 0) -> torch.Tensor:
    """OPD maps (B, N, N) [nm] with exactly the given RMS values, drawn from `seed`."""
    return sample_opd(model.cfg.aberration, model.basis(), model.mask, rms_nm, seed)
