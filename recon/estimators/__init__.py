"""Reconstructors behind one `Estimator` interface: frames -> OPD [nm] (see `base`).

Importing this package registers the classical baselines (``analytic``).

    from recon.estimators import NetworkEstimator, Reconstructor, create_baseline
    from recon.estimators import RefinedEstimator, ZeroEstimator   # hybrid: refine.py
"""

from recon.estimators.analytic import AnalyticEstimator, analytic_baseline
from recon.estimators.base import (
    NORMALISED_MEAN_RANGE,
    Estimator,
    as_frames,
    check_normalised,
    create_baseline,
    list_baselines,
    register_baseline,
    remove_piston,
)
from recon.estimators.lab import Prediction, Reconstructor, write_prediction
from recon.estimators.network import NetworkEstimator, wavelength_label
from recon.estimators.refine import RefinedEstimator, RefineReport, ZeroEstimator

__all__ = [
    "NORMALISED_MEAN_RANGE",
    "AnalyticEstimator",
    "Estimator",
    "NetworkEstimator",
    "Prediction",
    "Reconstructor",
    "RefineReport",
    "RefinedEstimator",
    "ZeroEstimator",
    "analytic_baseline",
    "as_frames",
    "check_normalised",
    "create_baseline",
    "list_baselines",
    "register_baseline",
    "remove_piston",
    "wavelength_label",
    "write_prediction",
]
