"""Fitting frames with the physics: one forward model, one solver, one noise model.

    from recon.refine import RefinedEstimator, FrameModel, calibrate
    est = RefinedEstimator(network, cfg, mode="modal")   # any Estimator's start, refined

- `forward`: `FrameModel`, the engine of `sim` (`ZWFSModel.fields`, a calibrated
  `sim.system` included) linearised: tangents, adjoints, the low-rank dot;
- `noise`: `NoiseModel` (one variance; the deviance, its null, `good_fit`);
- `solver`: the batched damped Gauss-Newton solver and its per-sample status;
- `modal`, `zonal`, `calibrate`: the three fits on that solver;
- `symmetry`, `estimator`: restarts and `RefinedEstimator`; `report`: `RefineReport`;
- `crb`: the Cramer-Rao bound; `fit_bench`: `recon bench-refine`.
"""

from recon.refine.calibrate import CalibrationResult, calibrate, load_calibration, save_calibration
from recon.refine.estimator import RefinedEstimator, ZeroEstimator
from recon.refine.forward import FrameModel, Linearisation
from recon.refine.modal import refine_modal
from recon.refine.noise import NoiseModel, good_fit
from recon.refine.report import RefineReport
from recon.refine.solver import STATUSES
from recon.refine.tracker import FrameTracker, TrackStep
from recon.refine.zonal import refine_zonal

__all__ = [
    "STATUSES",
    "CalibrationResult",
    "FrameModel",
    "FrameTracker",
    "Linearisation",
    "NoiseModel",
    "RefineReport",
    "RefinedEstimator",
    "TrackStep",
    "ZeroEstimator",
    "calibrate",
    "good_fit",
    "load_calibration",
    "refine_modal",
    "refine_zonal",
    "save_calibration",
]
