"""`sim check`: the batched engine against the POPPY reference on random wavefronts.

Two comparisons: the optics, with POPPY propagating the engine's own pupil (equal
sampling: agreement to `TOLERANCE`); and, for the obstructed and segmented pupils, the
geometry too, with POPPY's own aperture (`poppy_pupil`, sampled `PUPIL_OVERSAMPLE` times
finer). There a pupil error dP changes the field E = A e^{i phi} - b by dA = dP /
sqrt(clear mean) at its pixel, and b (the dot-filtered field) by at most the relative
sum of |dP|: |dI| <= 2 |E| dA + 2 |E| |b| sum|dP| / sum P, so |dI| / peak <=
2 max|dP| / sqrt(clear mean peak) + 2 sum|dP| / sum P (`pupil_tolerance`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from sim.aberrations import sample_opd
from sim.config import SimConfig
from sim.poppy_ref import PoppyZWFS
from sim.zwfs import ZWFSModel

__all__ = ["CheckRow", "converged_config", "pupil_tolerance", "rows_as_dicts", "run_check"]

TOLERANCE = 1e-5  # of the peak intensity, at equal sampling (docs/simulation.md)
PUPIL_OVERSAMPLE = 16
"""POPPY's aperture samples per pixel and axis in the geometry comparison."""


@dataclass
class CheckRow:
    """Agreement for one wavefront at one wavelength (errors relative to the peak intensity)."""

    wavelength_um: float
    rms_nm: float
    max_abs_err: float
    rms_err: float
    converged_max_err: float | None
    passed: bool
    pupil: str = "engine"
    tolerance: float = TOLERANCE


def converged_config(cfg: SimConfig) -> SimConfig:
    """The same system sampled finely enough to stand for the converged answer (q = 256)."""
    return cfg.with_overrides(
        precision="complex128",
        **{
            "focal.samples_per_lambda0_d": 256,
            "focal.antialias_subsamples": 16,
            "focal.antialias": True,
        },
    )


def pupil_tolerance(engine_pupil: np.ndarray, poppy: np.ndarray, clear_mean: float,
                    peak: float) -> float:  # fmt: skip
    """Largest |dI| / peak that the pupils' difference allows (module docstring)."""
    d = np.abs(np.asarray(engine_pupil) - poppy)
    return float(2 * d.max() / np.sqrt(clear_mean * peak) + 2 * d.sum() / poppy.sum())


def run_check(
    cfg: SimConfig,
    rms_nm: list[float],
    seed: int = 0,
    converged: bool = True,
    pupil: str = "engine",
) -> list[CheckRow]:
    """Compare engine and POPPY (same sampling) on one random wavefront per RMS value.

    With `converged`, also the engine's distance to a finely sampled reference: the
    sampling error that both share. pupil: "engine" (POPPY propagates the engine's
    pupil) or "poppy" (its own aperture; the tolerance follows from the pupils' difference).
    """
    model = ZWFSModel(cfg)
    reference = PoppyZWFS(cfg, pupil=pupil, oversample=PUPIL_OVERSAMPLE)
    opd = sample_opd(cfg.aberration, model.basis().double(), model.mask, rms_nm, seed)
    with torch.inference_mode():
        intensity = model(opd).double().numpy()
        fine = ZWFSModel(converged_config(cfg))(opd).numpy() if converged else None
    rows = []
    for li, wavelength in enumerate(cfg.wavelengths_um):
        for bi, rms in enumerate(rms_nm):
            expected = reference.intensity(opd[bi].numpy(), wavelength)
            peak = expected.max()
            diff = intensity[bi, li] - expected
            conv = (
                None
                if fine is None
                else float(np.abs(intensity[bi, li] - fine[bi, li]).max() / peak)
            )
            max_err = float(np.abs(diff).max() / peak)
            tol = TOLERANCE
            if pupil == "poppy":
                cm = float(model.clear_mean)
                tol += pupil_tolerance(model.pupil.numpy(), reference.pupil, cm, float(peak))
            rows.append(
                CheckRow(
                    wavelength_um=wavelength,
                    rms_nm=rms,
                    max_abs_err=max_err,
                    rms_err=float(np.sqrt(np.mean(diff**2)) / peak),
                    converged_max_err=conv,
                    passed=max_err < tol,
                    pupil=pupil,
                    tolerance=tol,
                )
            )
    return rows


def rows_as_dicts(rows: list[CheckRow]) -> list[dict]:
    """Rows as plain dicts for JSON."""
    return [asdict(r) for r in rows]
