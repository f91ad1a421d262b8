"""A batch of simulated samples, the one recipe of `sim generate` and `recon train --online`.

Sample i of (seed, stream) is: its aberration (`sim.aberrations.draw_aberrations`: Noll
modes, a power-law screen, or both), its system when the config has tolerances (dot
diameter and depth, pupil shift and scale: `sim.system.draw_systems`), its illumination
(`sim.system.illumination_maps`: one map per file, or one per sample), the engine's
frames, and the detector's noise drawn on the device (`sim.detector.add_noise`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from sim.aberrations import draw_aberrations
from sim.config import SimConfig
from sim.detector import add_noise, bin_frames
from sim.system import NOMINAL_SYSTEM, draw_systems, illumination_maps, system_terms
from sim.zwfs import ZWFSModel

__all__ = [
    "FILE_ILLUMINATION",
    "SampleBatch",
    "optional_variables",
    "segment_aberrations",
    "segment_count",
    "simulate_batch",
]

FILE_ILLUMINATION = 2**62
"""The illumination key of a file's one map (`illumination_maps`): no sample index."""


def segment_aberrations(cfg: SimConfig) -> bool:
    """Whether the config draws piston, tip or tilt per segment."""
    return bool(cfg.aberration.segment_piston_nm or cfg.aberration.segment_tiptilt_nm)


def segment_count(cfg: SimConfig) -> int:
    """Segments of the file's `segment_coefficients` (0: none)."""
    if not segment_aberrations(cfg):
        return 0
    from sim.pupil import pupil_segments

    return pupil_segments(cfg.pupil).count


def optional_variables(cfg: SimConfig) -> tuple[str, ...]:
    """The optional variables (`data.schema.OPTIONAL_VARIABLES`) a file of `cfg` holds."""
    out = []
    if cfg.aberration.kind != "modes":
        out.append("aberration_class")
    if segment_aberrations(cfg):
        out.append("segment_coefficients")
    if cfg.tolerances.active:
        out.append("system")
    if cfg.tolerances.active or (cfg.pupil.amplitude_rms > 0 and cfg.pupil.amplitude_per_sample):
        out.append("clear")  # each sample has its own clear frame
    return tuple(out)


@dataclass
class SampleBatch:
    """intensity (B, L, n, n) normalised and noisy, opd (B, n, n) [nm] on the detector grid,
    coefficients (B, M) [nm RMS], rms (B,) [nm], on the engine's device; clear
    (B, L, n, n): each sample's clear frame when they differ, else None (the file's
    `reference_frames`); `optional`: the file's optional variables as NumPy arrays."""

    intensity: torch.Tensor
    opd: torch.Tensor
    coefficients: torch.Tensor
    rms: torch.Tensor
    clear: torch.Tensor | None = None
    optional: dict[str, np.ndarray] = field(default_factory=dict)

    def arrays(self) -> dict[str, np.ndarray]:
        """Everything as float32 NumPy arrays for `data.writer.DatasetWriter.write_batch`."""
        return {
            "intensity": self.intensity.float().cpu().numpy(),
            "opd": self.opd.float().cpu().numpy(),
            "coefficients": self.coefficients.float().cpu().numpy(),
            "rms": self.rms.float().cpu().numpy(),
            **self.optional,
        }


def file_illumination(engine: ZWFSModel, seed: int, stream: int) -> torch.Tensor | None:
    """The file's one illumination map (N, N), or None (even, or a map per sample)."""
    pupil = engine.cfg.pupil
    if pupil.amplitude_rms == 0 or pupil.amplitude_per_sample:
        return None
    return illumination_maps(pupil, [FILE_ILLUMINATION], seed, stream, engine.mask)[0]


def reference_frames(
    engine: ZWFSModel, illumination: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(clear, ZWFS) frames (L, n, n) of the nominal system with the file's illumination."""
    if illumination is None:
        return engine.reference_clear(), engine.reference_zwfs()
    terms = system_terms(engine, NOMINAL_SYSTEM, illumination)
    zero = torch.zeros(1, *engine.pupil.shape, dtype=engine.real_dtype, device=engine.pupil.device)
    _, e_out = engine.fields(zero, *terms)
    binning = engine.cfg.detector.binning
    zwfs = bin_frames(e_out[:, :, 0].square() + e_out[:, :, 1].square(), binning)[0]
    clear = bin_frames(terms[0].square(), binning)
    return clear.expand_as(zwfs), zwfs


def simulate_batch(
    engine: ZWFSModel,
    indices: np.ndarray,
    seed: int,
    stream: int,
    basis: torch.Tensor,
    n_total: int | None = None,
    optics: Callable[[torch.Tensor], torch.Tensor] | None = None,
    illumination: torch.Tensor | None = None,
) -> SampleBatch:
    """Samples `indices` of (seed, stream): what `sim generate` writes for them.

    Args:
        engine: the engine of the config (its device and precision).
        basis: (M, N, N) the config's modes on the engine's grid and dtype.
        n_total: the file's size (the "grid" RMS distribution needs it).
        optics: another engine for the frames (POPPY's); None: `engine`. The realistic
            configs (tolerances, illumination) need `engine` itself.
        illumination: the file's map (`file_illumination`), when it has one.
    """
    cfg = engine.cfg
    idx = np.asarray(indices, dtype=np.int64)
    ab = draw_aberrations(
        cfg.aberration, idx, seed, stream, basis, engine.mask, cfg.pupil.diameter_m, n_total
    )
    names = optional_variables(cfg)
    optional: dict[str, np.ndarray] = {}
    if "segment_coefficients" in names:
        from sim.aberrations import pupil_rms
        from sim.segments import draw_segment_coefficients, segment_basis, segment_opd

        seg = draw_segment_coefficients(cfg, idx, seed, stream)  # (B, S, 3) nm
        seg_basis = segment_basis(cfg).to(ab.opd.device)
        ab.opd = ab.opd + segment_opd(torch.as_tensor(seg), seg_basis).to(ab.opd.dtype)
        ab.rms = pupil_rms(ab.opd.to(torch.float64), engine.mask).to(ab.rms.dtype)
        optional["segment_coefficients"] = seg.astype(np.float32)
    clear: torch.Tensor | None = None
    if "aberration_class" in names:
        optional["aberration_class"] = ab.classes
    binning = cfg.detector.binning
    if cfg.realistic:
        if optics is not None:
            raise ValueError("tolerances and illumination need the fast engine's optics")
        systems = (
            draw_systems(cfg.tolerances, idx, seed, stream)
            if cfg.tolerances.active
            else np.tile(NOMINAL_SYSTEM, (len(idx), 1))
        )
        illum = illumination
        if cfg.pupil.amplitude_rms > 0 and cfg.pupil.amplitude_per_sample:
            illum = illumination_maps(cfg.pupil, idx, seed, stream, engine.mask)
        amplitude, kernel, mix = system_terms(engine, systems, illum)
        _, e_out = engine.fields(ab.opd, amplitude, kernel, mix)
        frames = bin_frames(e_out[:, :, 0].square() + e_out[:, :, 1].square(), binning)
        if "system" in names:
            optional["system"] = systems.astype(np.float32)
        if "clear" in names:
            clear = bin_frames(amplitude.square(), binning)[:, None].expand_as(frames)
            optional["clear"] = clear.float().cpu().numpy()
    else:
        frames = (optics or engine)(ab.opd)  # (B, N, N) nm -> (B, L, n, n)
    det = cfg.detector
    pupil_pixels = int(engine.detector_mask.sum())
    frames = add_noise(frames, idx, seed, stream, det.photons, det.read_noise_e, pupil_pixels)
    opd = bin_frames(ab.opd, binning)
    return SampleBatch(frames, opd, ab.coefficients, ab.rms, clear, optional)
