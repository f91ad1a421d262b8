"""Classical reconstructors behind the `recon.estimator.Estimator` interface.

Importing this package registers them (``create_baseline("analytic", data_path)``).
"""

from recon.baselines.analytic import AnalyticEstimator, analytic_baseline, ndiaye_inverse

__all__ = ["AnalyticEstimator", "analytic_baseline", "ndiaye_inverse"]
