"""Evaluation: the same metrics for every estimator, single shot and closed loop, and reports.

from recon.evaluation import evaluate, write_report, closed_loop, write_loop_report
"""

from recon.evaluation.evaluate import default_out_dir, evaluate
from recon.evaluation.loop import closed_loop
from recon.evaluation.metrics import (
    CaptureRange,
    bin_masks,
    capture_range,
    capture_range_strict,
    closed_loop_capture_range,
    pearson,
    residual_rms_nm,
)
from recon.evaluation.report import jsonable, load_report, write_loop_report, write_report
from recon.evaluation.testset import TestSet, open_test_set

__all__ = [
    "CaptureRange",
    "TestSet",
    "bin_masks",
    "capture_range",
    "capture_range_strict",
    "closed_loop",
    "closed_loop_capture_range",
    "default_out_dir",
    "evaluate",
    "jsonable",
    "load_report",
    "open_test_set",
    "pearson",
    "residual_rms_nm",
    "write_loop_report",
    "write_report",
]
