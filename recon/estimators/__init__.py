"""Reconstructors behind one `Estimator` interface: frames -> OPD [nm] (see `base`).

Importing this package registers the classical baselines (``analytic``).

    from recon.estimators import NetworkEstimator, create_baseline
    from recon.refine import RefinedEstimator       # hybrid: a fit on any estimator's start
    from recon.reconstructor import Reconstructor   # what lab scripts call
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
from recon.estimators.network import NetworkEstimator, wavelength_label

__all__ = [
    "NORMALISED_MEAN_RANGE",
    "AnalyticEstimator",
    "Estimator",
    "NetworkEstimator",
    "analytic_baseline",
    "as_frames",
    "check_normalised",
    "create_baseline",
    "list_baselines",
    "register_baseline",
    "remove_piston",
    "wavelength_label",
]
