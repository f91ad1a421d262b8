"""`recon.metrics`: residual RMS, Pearson and the capture ranges, on numbers worked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recon.evaluation.metrics import (
    capture_range,
    closed_loop_capture_range,
    pearson,
    residual_rms_nm,
)

CENTRES = np.arange(12.5, 500, 25.0)  # one sample at the centre of each 25 nm bin, 0-500 nm


def _ramp(n: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """A tilt-like map (H, W) with zero mean, and an all-True mask."""
    x = np.arange(n, dtype=np.float64) - (n - 1) / 2
    return np.tile(x, (n, 1)), np.ones((n, n), bool)


def test_residual_ignores_piston_and_uses_the_mask() -> None:
    tilt, mask = _ramp()
    true = np.stack([tilt, tilt])
    est = np.stack([tilt + 5.0, np.zeros_like(tilt)])  # piston only; no estimate at all
    res = residual_rms_nm(true, est, mask)
    assert res[0] == pytest.approx(0.0, abs=1e-12)
    # x = -3.5 ... 3.5 in steps of 1: RMS = sqrt(mean(x^2)) = sqrt(5.25)
    assert res[1] == pytest.approx(math.sqrt(5.25))
    half = np.zeros_like(mask)
    half[:, :4] = True  # x = -3.5 ... -0.5: RMS about the mean -2 is sqrt(1.25)
    assert residual_rms_nm(true[1], est[1], half)[0] == pytest.approx(math.sqrt(1.25))


def test_pearson_scale_sign_and_undefined() -> None:
    tilt, mask = _ramp()
    true = np.stack([tilt, tilt, tilt])
    est = np.stack([3 * tilt + 7, -tilt, np.full_like(tilt, 2.0)])
    r = pearson(true, est, mask)
    assert r[0] == pytest.approx(1.0) and r[1] == pytest.approx(-1.0)
    assert np.isnan(r[2])  # a constant estimate has no correlation to speak of


def test_perfect_estimator_captures_everything() -> None:
    cr = capture_range(CENTRES, np.zeros_like(CENTRES))
    assert cr.capture_range_nm == 500.0  # the last bin edge
    assert cr.crossing_nm is None
    assert cr.bins[0].judged is False and cr.bins[0].passed is None  # 0-25 reported only
    assert all(b.passed for b in cr.bins[1:]) and len(cr.bins) == 20


def test_residual_a_third_of_the_rms_fails_from_the_first_judged_bin() -> None:
    # 0.3 x 37.5 = 11.25 nm > max(0.2 x 37.5, 10) = 10 nm: the 25-50 bin fails, the run is
    # empty and the range is its lower edge. The criterion 0.3 x = 10 crosses at 33.33 nm:
    # margins 10 - 3.75 = 6.25 at 12.5 nm and 10 - 11.25 = -1.25 at 37.5 nm.
    cr = capture_range(CENTRES, 0.3 * CENTRES)
    assert cr.capture_range_nm == 25.0
    assert cr.crossing_nm == pytest.approx(100 / 3)
    assert not any(b.passed for b in cr.bins[1:])


def test_residual_below_a_fifth_passes_every_bin() -> None:
    cr = capture_range(CENTRES, 0.19 * CENTRES)
    assert cr.capture_range_nm == 500.0


def test_threshold_is_inclusive_at_the_bin_centre() -> None:
    # bin 100-125: centre 112.5, threshold 0.2 x 112.5 = 22.5 nm
    res = np.where(CENTRES == 112.5, 22.5, 0.0)
    assert capture_range(CENTRES, res).capture_range_nm == 500.0
    res = np.where(CENTRES == 112.5, 22.6, 0.0)
    cr = capture_range(CENTRES, res)
    assert cr.capture_range_nm == 100.0
    # margin 17.5 at 87.5 nm, 22.5 - 22.6 = -0.1 at 112.5 nm
    assert cr.crossing_nm == pytest.approx(87.5 + 25 * 17.5 / 17.6)


def test_a_gap_stops_the_range() -> None:
    res = np.where(CENTRES == 112.5, 50.0, 0.0)  # only the 100-125 bin fails
    cr = capture_range(CENTRES, res)
    assert cr.capture_range_nm == 100.0
    assert cr.largest_passing_nm == 500.0  # bins after the gap pass, but do not count
    assert cr.crossing_nm == pytest.approx(87.5 + 25 * 17.5 / (17.5 + 27.5))


def test_the_first_bin_is_not_judged_and_medians_are_robust() -> None:
    true = np.array([5.0, 10.0, 30.0, 35.0, 40.0, 60.0, 70.0])
    res = np.array([90.0, 90.0, 0.0, 0.0, 100.0, 1.0, 2.0])  # 25-50: median 0 passes
    cr = capture_range(true, res, max_rms=75)
    assert [b.count for b in cr.bins] == [2, 3, 2]
    assert cr.capture_range_nm == 75.0


def test_an_empty_bin_breaks_the_run() -> None:
    true = np.array([10.0, 30.0, 80.0, 90.0])
    cr = capture_range(true, np.zeros(4), max_rms=100)
    assert cr.bins[2].count == 0 and cr.bins[2].passed is None
    assert cr.capture_range_nm == 50.0
    assert cr.largest_passing_nm == 100.0


def test_closed_loop_threshold_is_strict() -> None:
    true = np.array([30.0, 60.0, 80.0])
    cr = closed_loop_capture_range(true, np.array([9.9, 9.999, 10.0]), max_rms=100)
    assert [b.passed for b in cr.bins[1:]] == [True, True, False]
    assert cr.capture_range_nm == 75.0


def test_report_is_plain_data() -> None:
    d = capture_range(CENTRES, np.zeros_like(CENTRES)).to_dict()
    assert d["bins"][1]["lo_nm"] == 25.0 and d["capture_range_nm"] == 500.0
    assert "0.2" in d["criterion"]


def test_mismatched_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="differ"):
        capture_range(np.ones(3), np.ones(4))
    tilt, mask = _ramp()
    with pytest.raises(ValueError, match="mask"):
        residual_rms_nm(tilt, tilt, mask[:4])


def test_loop_table_bins_as_the_capture_range_does(tmp_path) -> None:
    """The loop report's per-bin rows use the metrics' binning: the largest true RMS,
    exactly on a bin edge (100 nm), sits in the last bin of both tables."""
    from recon.evaluation import bin_masks, write_loop_report

    true = np.array([10.0, 30.0, 60.0, 75.0, 99.0, 100.0])
    final = np.array([1.0, 2.0, 3.0, 20.0, 30.0, 40.0])
    cr = closed_loop_capture_range(true, final)
    assert [b.count for b in cr.bins] == [1, 1, 1, 3]
    assert [int(m.sum()) for m in bin_masks(true, 25.0, 4)] == [1, 1, 1, 3]
    report = {
        "estimator": "test", "data": "none", "n_samples": true.size, "iterations": 1,
        "gain": 1.0, "wavelengths_um": [1.0], "noise": False,
        "capture_range_nm": cr.capture_range_nm, "largest_passing_nm": cr.largest_passing_nm,
        "capture_range": cr.to_dict(),
        "per_sample": {"residual_rms_nm": np.stack([true, final], axis=1).tolist()},
    }  # fmt: skip
    md = write_loop_report(report, tmp_path)["markdown"].read_text()
    rows = [line.split("|") for line in md.splitlines() if line.startswith("| 75-100")]
    (row,) = rows
    assert int(row[2]) == 3  # n: 75, 99 and the 100 nm sample
    assert float(row[4]) == pytest.approx(np.median([20.0, 30.0, 40.0]))  # last iteration
