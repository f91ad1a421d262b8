"""Refinement in a segment basis and the per-segment piston metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recon.evaluation.metrics import piston_capture_range, segment_piston_errors
from sim.config import load_sim_config
from sim.pupil import pupil_segments
from sim.segments import (
    draw_segment_coefficients,
    segment_basis,
    segment_fit_basis,
    segment_means_weights,
)
from sim.zernike import zernike_basis


def _cfg(**dotted):
    return load_sim_config("segmented").with_overrides(**dotted)


def test_fit_basis_spans_the_segments_and_leaves_out_the_common_piston() -> None:
    """Pistons of all segments but the first, every tip and tilt, then the global modes
    that the segments cannot hold: Noll 2 and 3 drop out, the common piston is not in the
    span, and segment piston differences and tip-tilt are (exactly)."""
    cfg = _cfg()
    basis, labels = segment_fit_basis(cfg, 36)
    count = pupil_segments(cfg.pupil).count
    assert labels[: count - 1] == [f"piston {s}" for s in range(1, count)]
    assert "Noll 2" not in labels and "Noll 3" not in labels and "Noll 4" in labels
    assert len(labels) == 3 * count - 1 + 33 and basis.shape == (len(labels), 64, 64)
    lit = torch.as_tensor(pupil_segments(cfg.pupil).transmission > 0)
    a = basis[:, lit].T  # (P, J)

    def residual(v: torch.Tensor) -> float:
        c = torch.linalg.lstsq(a, v[:, None]).solution
        return float((a @ c - v[:, None]).norm() / v.norm())

    assert residual(torch.ones(int(lit.sum()), dtype=torch.float64)) > 0.1  # common piston
    seg = segment_basis(cfg)
    assert residual((seg[3, 0] - seg[0, 0])[lit]) > 0.1  # the first segment is held at 0
    assert residual((seg[3, 0] - seg[5, 0] + 0.3 * seg[0, 1])[lit]) < 1e-10
    tilt = torch.as_tensor(zernike_basis([3], 64, 6.0, clip=False)[0])
    first = torch.as_tensor(segment_means_weights(cfg)[0])
    held = tilt - (tilt * first).sum()  # a global tilt, up to the invisible common piston
    assert residual(held[lit]) < 1e-3  # (its mean over the first segment's pixels is not
    # quite its value at the segment's centre, which the first tip-tilt holds at zero)
    assert torch.linalg.matrix_rank(a) == a.shape[1]


def test_uniform_segment_scale_covers_zero_to_the_range() -> None:
    """segment_scale uniform: each sample's pistons within its own fraction of the range."""
    cfg = _cfg(**{"aberration.segment_scale": "uniform"})
    c = draw_segment_coefficients(cfg, np.arange(400), 0, 3)
    largest = np.abs(c[:, :, 0]).max(axis=1)
    assert largest.max() <= 2000.0
    assert np.histogram(largest, bins=4, range=(0, 2000))[0].min() > 40  # all quarters
    fixed = draw_segment_coefficients(_cfg(), np.arange(50), 0, 3)
    assert np.abs(fixed[:, :, 0]).max(axis=1).min() > 1500  # 18 draws: the top is near 2 um


def test_segment_piston_errors_ignore_the_common_piston() -> None:
    cfg = _cfg()
    w = segment_means_weights(cfg)
    seg = segment_basis(cfg)[:, 0].numpy()
    err = np.einsum("s,shw->hw", np.arange(18.0), seg) + 500.0 * (seg.sum(0) > 0)
    got = segment_piston_errors(err[None], w)[0]
    assert got == pytest.approx(np.arange(18.0) - 8.5, abs=1e-9)


def test_piston_capture_range_is_the_unbroken_run_of_passing_bins() -> None:
    ranges = np.array([20.0, 70, 120, 170, 220])
    errors = np.zeros((5, 18))
    errors[3, 0] = 11.0  # 170 nm: one segment of 18 out of tolerance -> 94 % < 99 %
    errors[4] = 50.0
    out = piston_capture_range(ranges, errors)
    assert out["piston_capture_range_nm"] == 150.0
    assert [b["ok"] for b in out["bins"]] == [True, True, True, False, False]
    with pytest.raises(ValueError, match="samples, segments"):
        piston_capture_range(ranges, errors[:3])


def test_refinement_phases_small_pistons_from_a_flat_start(tmp_path) -> None:
    """Noiseless frames with pistons up to +-60 nm, tip-tilt and a global aberration: the
    segment-basis fit from zero ends every segment within 0.1 nm, and recon's evaluation
    reports the pistons."""
    from recon.evaluation.evaluate import evaluate
    from recon.refine.estimator import RefinedEstimator, ZeroEstimator
    from sim.generate import plan_generation, run_generation

    cfg = _cfg(**{"aberration.segment_piston_nm": 60.0, "aberration.rms_max_nm": 20.0})
    path = tmp_path / "seg.h5"
    run_generation(plan_generation(cfg, path, 4, split="test", device="cpu"))
    est = RefinedEstimator(ZeroEstimator(cfg), cfg, restarts=0)
    report = evaluate({"refined": est}, path)
    piston = report["estimators"]["refined"]["piston"]
    errors = np.abs(report["per_sample"]["segment_piston_error_nm"]["refined"])
    assert errors.max() < 0.1, errors.max()
    assert piston["within_fraction"] == 1.0 and piston["piston_capture_range_nm"] >= 50
    assert report["estimators"]["refined"]["summary"]["median_residual_nm"] < 0.1


def test_segment_pistons_reach_the_cramer_rao_bound_at_1e7_photons(tmp_path) -> None:
    """At 1e7 photons the weighted fit's per-segment piston error is the bound's: the
    median over samples of (RMS error / RMS CRB over the segments) within [0.6, 1.5] (18
    segments: each ratio scatters by ~17 %, the median of 8 by less)."""
    from recon.evaluation.evaluate import evaluate
    from recon.refine.estimator import RefinedEstimator, ZeroEstimator
    from sim.generate import plan_generation, run_generation

    cfg = _cfg(**{"aberration.segment_piston_nm": 40.0, "aberration.rms_max_nm": 20.0,
                  "detector.photons": 1e7})  # fmt: skip
    path = tmp_path / "seg7.h5"
    run_generation(plan_generation(cfg, path, 8, split="test", device="cpu"))
    est = RefinedEstimator(ZeroEstimator(cfg), cfg, restarts=0)
    piston = evaluate({"refined": est}, path)["estimators"]["refined"]["piston"]
    assert piston["within_fraction"] == 1.0
    assert 0.6 <= piston["piston_error_over_crb"] <= 1.5, piston
    assert 0.01 < piston["piston_crb_rms_nm"] < 1.0  # ~0.1 nm: bright frames


def test_segmented_restarts_use_the_pupils_own_symmetries() -> None:
    """A hexagonal pupil keeps the half turn and two mirrors, not the quarter turns; the
    circle keeps all eight."""
    from recon.refine.symmetry import pupil_symmetries
    from sim.pupil import pupil_transmission

    hexes = pupil_symmetries(pupil_transmission(_cfg().pupil))
    assert hexes[0] == (0, False) and len(hexes) == 4 and (1, False) not in hexes
    circle = pupil_symmetries(pupil_transmission(load_sim_config("quick").pupil))
    assert len(circle) == 8


def test_global_modes_vanish_outside_a_segmented_pupil() -> None:
    from sim.zwfs import ZWFSModel

    model = ZWFSModel(_cfg())
    dark = model.pupil.cpu().numpy() == 0
    assert float(model.basis()[:, torch.as_tensor(dark)].abs().max()) == 0.0
