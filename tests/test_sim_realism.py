"""Frames the nominal model does not make: power-law screens, mixtures, uneven
illumination, and per-sample dot and alignment errors, in the engine and in the file."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from sim.aberrations import draw_aberrations, pupil_rms
from sim.config import load_sim_config
from sim.screens import power_law_screens
from sim.zwfs import ZWFSModel


def _cfg(**over: object):
    return load_sim_config("quick").with_overrides(**{"pupil.npix": 32, **over})


def _engine(cfg) -> ZWFSModel:
    return ZWFSModel(cfg.model_copy(update={"precision": "complex128"}))


def test_screen_structure_function_follows_the_power_law() -> None:
    """PSD ~ f^-3 in 2D gives a structure function D(r) ~ r^(3 - 2) = r at separations
    well inside the grid; the crop from a 4x grid keeps the FFT's wrap out of the pupil
    (a screen made on the pupil's own grid is periodic: D(N - r) = D(r))."""
    screens = power_law_screens(np.arange(64), 0, 7, 64, index=3.0)  # (64, 64, 64)

    def structure(r: int) -> float:
        return float((screens[:, :, r:] - screens[:, :, :-r]).square().mean())

    ratio = structure(8) / structure(4)
    assert ratio == pytest.approx(2.0, rel=0.15), ratio
    periodic = power_law_screens(np.arange(64), 0, 7, 64, index=3.0, oversize=1)
    wrap = float((periodic[:, :, 0] - periodic[:, :, -1]).square().mean())
    near = float((periodic[:, :, 0] - periodic[:, :, 1]).square().mean())
    assert wrap == pytest.approx(near, rel=0.2)  # the periodic grid wraps; ours does not
    assert float((screens[:, :, 0] - screens[:, :, -1]).square().mean()) > 5 * near


@pytest.mark.parametrize("kind", ["screen", "mixture"])
def test_screens_and_mixtures_hold_their_rms_and_modal_truth(kind: str) -> None:
    cfg = _cfg(**{"aberration.kind": kind, "aberration.high_order_rms_nm": 20.0})
    engine = _engine(cfg)
    basis, mask = engine.basis(), engine.mask
    idx = np.arange(5)
    ab = draw_aberrations(cfg.aberration, idx, 0, 1, basis, mask, 6.0)
    again = draw_aberrations(cfg.aberration, idx[3:], 0, 1, basis, mask, 6.0)
    torch.testing.assert_close(ab.opd[3:], again.opd)  # a sample is its own, any batch
    assert list(ab.classes) == [1 if kind == "screen" else 2] * 5
    modal = torch.einsum("bj,jhw->bhw", ab.coefficients, basis)
    rest = ab.opd - modal
    flat = basis[:, mask]
    # what is left after the coefficients is orthogonal to every mode (least squares)
    resid_proj = (rest[:, mask] - rest[:, mask].mean(1, keepdim=True)) @ flat.T / mask.sum()
    assert float(resid_proj.abs().max()) < 1e-6 * float(ab.rms.max())
    if kind == "mixture":  # the modes' part is the modal draw, the rest exactly 20 nm
        np.testing.assert_allclose(pupil_rms(rest, mask).numpy(), 20.0, rtol=1e-9)
    else:  # most of a f^-2 screen's variance lies beyond Noll 36 on this grid
        beyond = pupil_rms(rest, mask) / ab.rms
        assert float(beyond.min()) > 0.3
    np.testing.assert_allclose(ab.rms.numpy(), pupil_rms(ab.opd, mask).numpy(), rtol=1e-12)


def test_blend_records_each_samples_class_in_the_file(tmp_path) -> None:
    from sim.generate import generate_dataset

    cfg = _cfg(**{"aberration.kind": "blend"})
    path = generate_dataset(cfg, tmp_path / "b.h5", 12, split="test", device="cpu")
    with h5py.File(path) as f:
        classes = f["aberration_class"][:]
        assert set(classes) == {0, 1, 2}
        assert "system" not in f and "clear" not in f  # nothing else varies


def test_illumination_is_one_smooth_map_per_file_or_per_sample(tmp_path) -> None:
    from sim.generate import generate_dataset

    for per_sample in (False, True):
        cfg = _cfg(**{"pupil.amplitude_rms": 0.13, "pupil.amplitude_per_sample": per_sample})
        path = generate_dataset(cfg, tmp_path / f"i{per_sample}.h5", 4, split="test", device="cpu")
        with h5py.File(path) as f:
            inside = f["pupil"][:] >= 0.5
            clear = f["clear"][:] if per_sample else f["reference_clear"][:][None]
            assert ("clear" in f) is per_sample
            # normalised: mean 1 inside the pupil, as a lab divides by its clear frame
            np.testing.assert_allclose(clear[..., inside].mean(-1), 1.0, rtol=1e-5)
            rel = clear[..., inside].std(-1) / clear[..., inside].mean(-1)
            assert np.all((rel > 0.1) & (rel < 0.25)), rel  # 13 % plus the grey edge
            if per_sample:
                assert not np.allclose(clear[0], clear[1])


def test_tolerances_are_the_engine_with_each_samples_system(tmp_path) -> None:
    """Per-sample dot and alignment errors, recorded, and the frames are those of the one
    forward model (`FrameModel` with that sample's system)."""
    from recon.refine import FrameModel
    from sim.generate import generate_dataset

    cfg = _cfg(**{"tolerances.diameter": 0.05, "tolerances.depth": 0.05,
                  "tolerances.shift_px": 0.5, "precision": "complex128"})  # fmt: skip
    path = generate_dataset(cfg, tmp_path / "t.h5", 3, split="test", device="cpu")
    with h5py.File(path) as f:
        systems, frames, opd = f["system"][:], f["intensity"][:], f["opd"][:]
    assert np.all(np.abs(systems[:, 0] - 1) <= 0.05) and np.all(np.abs(systems[:, 2]) <= 0.5)
    assert np.abs(systems[:, :4] - [1, 1, 0, 0]).min(0).max() > 0  # they do vary
    for i in range(3):
        model = FrameModel(cfg, system=systems[i].astype(np.float64))
        expected = model.intensity(torch.as_tensor(opd[i : i + 1], dtype=torch.float64))
        np.testing.assert_allclose(frames[i], expected[0].numpy(), atol=2e-5)


def test_refinement_with_the_measured_pupil_fits_uneven_illumination(tmp_path) -> None:
    """13 % RMS illumination, a new map per frame: with each frame's clear frame the
    forward model is right again (the fit reaches the float32 floor from 20 nm off);
    without it the model is wrong by the illumination and the fit stays far off."""
    from recon.refine import RefinedEstimator
    from sim.generate import generate_dataset

    cfg = _cfg(**{"pupil.amplitude_rms": 0.13, "pupil.amplitude_per_sample": True,
                  "aberration.rms_max_nm": 150.0})  # fmt: skip
    path = generate_dataset(cfg, tmp_path / "lit.h5", 4, split="test", device="cpu")
    with h5py.File(path) as f:
        frames, clear, opd = f["intensity"][:], f["clear"][:], f["opd"][:]
    engine = _engine(cfg)
    mask = engine.mask.numpy()
    basis = engine.basis().numpy()
    truth_c = np.linalg.lstsq(basis[:, mask].T, opd[:, mask].T, rcond=None)[0].T
    rng = np.random.default_rng(0)
    start = np.einsum("bj,jhw->bhw", truth_c + rng.normal(0, 20 / 35**0.5, truth_c.shape), basis)

    class _Start:
        name, npix, wavelengths_m = "start", 32, list(cfg.wavelengths_m)

        def __init__(self) -> None:
            self.mask = mask

        def estimate(self, x, wavelengths_m=None, clear=None):
            return start[: len(x)].astype(np.float32)

    def residual(est_opd: np.ndarray) -> np.ndarray:
        d = (est_opd - opd)[:, mask]
        return (d - d.mean(1, keepdims=True)).std(1)

    est = RefinedEstimator(_Start(), cfg, restarts=0)
    with_clear = residual(est.estimate(frames, clear=clear))
    assert with_clear.max() < 0.05, with_clear
    assert est.last_report.good_fit.all()
    blind = residual(RefinedEstimator(_Start(), cfg, restarts=0).estimate(frames))
    assert blind.min() > 20 * with_clear.max(), (blind, with_clear)


def test_out_of_model_fits_say_so_once_instead_of_restarting(tmp_path) -> None:
    """Noll 2-36 plus 20 nm RMS beyond them: no modal fit reaches the noiseless floor.
    The first restart lands on the same minimum as the first start, so the fit is
    flagged "model mismatch" after two starts, not refitted from all eight views."""
    from recon.refine import RefinedEstimator
    from sim.generate import generate_dataset

    cfg = _cfg(**{"aberration.kind": "mixture", "aberration.rms_max_nm": 100.0})
    path = generate_dataset(cfg, tmp_path / "mix.h5", 3, split="test", device="cpu")
    with h5py.File(path) as f:
        frames, coeffs = f["intensity"][:], f["coefficients"][:].astype(np.float64)
    basis = _engine(cfg).basis().numpy()
    modal = np.einsum("bj,jhw->bhw", coeffs, basis)

    class _View:  # the modal truth, 5 nm off, unturned: every view gives another start
        name, npix, wavelengths_m = "view", 32, list(cfg.wavelengths_m)
        mask = _engine(cfg).mask.numpy()

        def estimate(self, x, wavelengths_m=None):
            rng = np.random.default_rng(int(abs(float(np.asarray(x)[:, 0, 3, 5].sum())) * 1e6))
            err = np.einsum("bj,jhw->bhw", rng.normal(0, 5 / 35**0.5, coeffs.shape), basis)
            return (modal + err)[: len(x)].astype(np.float32)

    est = RefinedEstimator(_View(), cfg, restarts=7)
    est.estimate(frames)
    rep = est.last_report
    assert not rep.good_fit.any()
    assert rep.mismatch.all() and (rep.starts == 2).all(), rep.starts
    assert list(rep.status) == ["model mismatch"] * 3


def test_a_network_trained_on_clear_divided_frames_runs_everywhere(tmp_path) -> None:
    """data.normalisation: clear, end to end: train on realistic frames (illumination,
    tolerances, a blend of classes), then evaluate (network alone and refined) on a
    held-out illuminated set; the checkpoint says it needs the clear frames, and gets
    them from the file."""
    import json

    from typer.testing import CliRunner

    from recon.cli import app
    from recon.estimators import NetworkEstimator
    from sim.generate import generate_dataset

    cfg = load_sim_config("realistic").with_overrides(**{"pupil.npix": 16})
    for split, n in (("train", 32), ("val", 8), ("test", 6)):
        generate_dataset(cfg, tmp_path / f"{split}.h5", n, split=split, device="cpu")
    runner = CliRunner()
    args = ["train", "--config", "realistic", "--data", str(tmp_path / "train.h5"), "--epochs",
            "1", "--batch-size", "8", "--out", str(tmp_path / "runs"), "--no-progress"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "runs").iterdir()
    net = NetworkEstimator.from_checkpoint(run)
    assert net.needs_clear
    with h5py.File(tmp_path / "test.h5") as f:
        frames, clear = f["intensity"][:], f["clear"][:]
    with pytest.raises(ValueError, match="clear"):
        net.estimate(frames)
    assert net.estimate(frames, clear=clear).shape == (6, 16, 16)
    out = tmp_path / "report"
    args = ["eval", str(run), "--refine", "modal", "--no-zero-start", "--data",
            str(tmp_path / "test.h5"), "--out", str(out)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    names = list(json.loads((out / "report.json").read_text())["estimators"])
    assert len(names) == 2 and names[1].endswith("+ refine")
