"""The system a lab really has: the dot's diameter and depth and the pupil's position and
size on the detector, as departures from the config (what calibration fits).

A system is a vector of `SYSTEM_FIELDS`; `system_terms` turns it into the three inputs
of the engine that depend on it (pupil amplitude, dot kernel, dot phase mix), in torch
and differentiable, so that refinement with a calibrated system and calibration itself
run the one engine of `sim.zwfs.ZWFSModel`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from sim.geometry import disk_cell_areas

if TYPE_CHECKING:
    from sim.zwfs import ZWFSModel

__all__ = ["NOMINAL_SYSTEM", "SYSTEM_FIELDS", "SYSTEM_UNITS", "system_pupil", "system_terms"]

SYSTEM_FIELDS = ("diameter_scale", "depth_scale", "shift_x_px", "shift_y_px", "pupil_scale")
"""The system vector, in order: dot diameter and depth as factors of the config's, pupil
centre shift (x: columns, y: rows) [px] and pupil radius as a factor."""
SYSTEM_UNITS = ("x config", "x config", "px", "px", "x radius")
NOMINAL_SYSTEM = (1.0, 1.0, 0.0, 0.0, 1.0)


def system_pupil(npix: int, system: torch.Tensor) -> torch.Tensor:
    """Transmission (N, N) of the pupil shifted by system[2:4] [px] and scaled by system[4]:
    exact pixel areas of the disk (the nominal `sim.pupil.circular_pupil` at the nominal
    system), differentiable in the system."""
    edges = torch.arange(npix + 1, dtype=torch.float64, device=system.device) - npix / 2
    sys64 = system.to(torch.float64)
    return disk_cell_areas(edges, (sys64[2], sys64[3]), sys64[4] * npix / 2)


def system_terms(
    engine: ZWFSModel, system: torch.Tensor | Sequence[float]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(amplitude (N, N), dot kernel, dot mix (L, 2, 2)) of `engine` for `system`.

    The amplitude is normalised as the nominal pupil's (the frames are divided by the
    nominal clear-pupil mean), in the engine's real dtype; gradients flow to `system`.
    """
    sys_t = torch.as_tensor(system, dtype=torch.float64, device=engine.pupil.device)
    dtype = engine.real_dtype
    pupil = system_pupil(engine.cfg.pupil.npix, sys_t)
    amplitude = (pupil / engine.clear_mean.to(torch.float64).sqrt()).to(dtype)
    kernel = engine.dot_kernel(sys_t[0]).to(dtype)
    mix = engine.dot_mix_at(sys_t[1]).to(dtype)
    return amplitude, kernel, mix
