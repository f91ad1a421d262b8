"""What each sample's fit did: iterations, misfit, why it stopped, whether it fits the noise."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from recon.refine.noise import NoiseModel, good_fit
from recon.refine.solver import CONVERGED, MODEL_MISMATCH, POOR_FIT, STATUSES, Solution

__all__ = ["RefineReport", "fit_report"]


@dataclass
class RefineReport:
    """Per-sample outcome (B,) of a fit.

    Attributes:
        iterations: Gauss-Newton systems built (summed over the starts tried).
        misfit: final deviance per pixel (`NoiseModel.deviance`): ~1 for a fit down to the
            noise, ~0 for noiseless frames.
        solver_status: why the solver stopped (`recon.refine.solver`: converged, stalled,
            iteration limit).
        good_fit: the misfit is what the noise gives at the truth (`good_fit`): False
            for a fit stuck in a local minimum, or frames the model cannot reproduce.
        starts: starts fitted (1, or more after restarts; `RefinedEstimator`).
        mismatch: a poor fit that another start brought back to the same minimum: the
            misfit is the model's (frames it cannot reproduce), not a local minimum's;
            no more restarts are tried for it.
    """

    iterations: np.ndarray
    misfit: np.ndarray
    solver_status: np.ndarray
    good_fit: np.ndarray
    starts: np.ndarray
    mismatch: np.ndarray

    @property
    def status(self) -> np.ndarray:
        """One word per sample: "model mismatch" or "poor fit" where the fit is not good
        (`STATUSES`), else why the solver stopped."""
        bad = np.where(self.mismatch, MODEL_MISMATCH, POOR_FIT)
        return np.where(self.good_fit, self.solver_status, bad)

    @property
    def converged(self) -> np.ndarray:
        """True where the solver converged (a stall or the iteration limit is not)."""
        return self.solver_status == CONVERGED

    def counts(self) -> dict[str, int]:
        """Samples per status, every status named (`STATUSES`)."""
        status = self.status
        return {name: int((status == name).sum()) for name in STATUSES}

    def take(self, rows: np.ndarray) -> RefineReport:
        """The report of some samples."""
        return RefineReport(*(getattr(self, f.name)[rows] for f in fields(self)))

    @classmethod
    def join(cls, reports: list[RefineReport]) -> RefineReport:
        """Reports of consecutive batches as one."""
        return cls(*(np.concatenate([getattr(r, f.name) for r in reports]) for f in fields(cls)))


def fit_report(
    solution: Solution,
    deviance: torch.Tensor,
    intensity: torch.Tensor,
    frames: torch.Tensor,
    judge: NoiseModel,
) -> RefineReport:
    """The report of one fit (one start each): misfit per pixel from the summed deviance
    (B,), and `good_fit` by `judge` at the final `intensity`."""
    good = good_fit(judge, intensity, frames)
    return RefineReport(
        solution.iterations,
        (deviance / frames[0].numel()).cpu().numpy(),
        solution.status,
        good.cpu().numpy(),
        np.ones(len(solution.iterations), np.int64),
        np.zeros(len(solution.iterations), bool),
    )
