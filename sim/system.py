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

import numpy as np
import torch

from data.schema import PUPIL_THRESHOLD
from sim.config import PupilConfig, TolerancesConfig
from sim.detector import bin_frames
from sim.geometry import disk_cell_areas
from sim.zernike import zernike_basis

if TYPE_CHECKING:
    from sim.zwfs import ZWFSModel

__all__ = [
    "NOMINAL_SYSTEM",
    "SYSTEM_FIELDS",
    "SYSTEM_UNITS",
    "draw_systems",
    "illumination_maps",
    "system_pupil",
    "system_terms",
]

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
    engine: ZWFSModel,
    system: torch.Tensor | Sequence[float],
    illumination: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(amplitude, dot kernel, dot mix) of `engine` for a system (5,), or one per sample
    (B, 5): amplitude (N, N) or (B, N, N), kernel (L, 1, 2M', 2M') or (B, L, 1, ...),
    mix (L, 2, 2) or (B, L, 2, 2), in the engine's real dtype; gradients flow to `system`.

    illumination: the clear-pupil intensity's shape over the pupil, (N, N) or (B, N, N)
    (mean ~1), or None (even). The amplitude is normalised so that each clear frame has
    a mean of 1 inside its own pupil (transmission >= 0.5, `data.schema.PUPIL_THRESHOLD`),
    as `data.lab` normalises lab frames.
    """
    sys_t = torch.as_tensor(system, dtype=torch.float64, device=engine.pupil.device)
    batched = sys_t.dim() == 2
    rows = sys_t if batched else sys_t[None]
    npix = engine.cfg.pupil.npix
    if engine.cfg.pupil.geometry == "circular":
        pupil = torch.stack([system_pupil(npix, r) for r in rows])  # (B, N, N) transmission
    else:  # shift and scale are modelled for the circle only (the config refuses them)
        pupil = engine.pupil.to(torch.float64).expand(len(rows), npix, npix)
    amplitude = pupil  # transmission: an amplitude (no square root: its slope at 0 is inf)
    if illumination is not None:
        amplitude = amplitude * illumination.to(torch.float64).sqrt()  # the map is >= 0.05
    intensity = amplitude.square()
    b = engine.cfg.detector.binning
    clear = bin_frames(intensity, b)  # (B, N/b, N/b)
    inside = bin_frames(pupil, b) >= PUPIL_THRESHOLD  # each pupil's own "inside", as a lab's
    mean = (clear * inside).flatten(1).sum(1) / inside.flatten(1).sum(1)  # (B,)
    amplitude = amplitude / mean.sqrt()[:, None, None]
    kernel = torch.stack([engine.dot_kernel(r[0]) for r in rows])  # (B, L, 1, 2M', 2M')
    mix = engine.dot_mix_at(rows[:, 1:2])  # (B, L, 2, 2)
    out = (amplitude, kernel, mix) if batched else (amplitude[0], kernel[0], mix[0])
    return tuple(t.to(engine.real_dtype) for t in out)  # type: ignore[return-value]


TOLERANCE_STREAM = 5
"""The fourth element of a sample's generator key for its system's errors."""
ILLUMINATION_STREAM = 6
"""... and for its illumination."""


def draw_systems(
    tolerances: TolerancesConfig, indices: np.ndarray, seed: int, stream: int
) -> np.ndarray:
    """Per-sample systems (B, 5): each entry uniform within the tolerances' +- range."""
    half = np.array(
        [tolerances.diameter, tolerances.depth, tolerances.shift_px, tolerances.shift_px,
         tolerances.pupil_scale]
    )  # fmt: skip
    out = np.empty((len(indices), len(SYSTEM_FIELDS)))
    for row, i in enumerate(np.asarray(indices, dtype=np.int64)):
        rng = np.random.default_rng([seed, stream, int(i), TOLERANCE_STREAM])
        out[row] = np.asarray(NOMINAL_SYSTEM) + rng.uniform(-1, 1, len(SYSTEM_FIELDS)) * half
    return out


def illumination_maps(
    pupil: PupilConfig, keys: Sequence[int], seed: int, stream: int, mask: torch.Tensor
) -> torch.Tensor:
    """Smooth random illumination (K, N, N): 1 + a random direction of Noll 2-11 scaled to
    `pupil.amplitude_rms` RMS over the pupil `mask` (and clamped at 0.05), float64.

    keys: the sample indices (a map per sample), or `sim.samples.FILE_ILLUMINATION`.
    """
    modes = list(range(2, 12))
    z = torch.as_tensor(zernike_basis(modes, pupil.npix), device=mask.device)
    out = []
    for key in keys:
        rng = np.random.default_rng([seed, stream, int(key), ILLUMINATION_STREAM])
        c = torch.as_tensor(rng.standard_normal(len(modes)), device=mask.device)
        shape = torch.einsum("j,jhw->hw", c, z)
        shape = shape / shape[mask].std() * pupil.amplitude_rms
        out.append((1.0 + shape).clamp_min(0.05))
    return torch.stack(out)
