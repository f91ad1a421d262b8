"""`recon train`: a real learning test, the CLI run folder and --resume, the NaN guard,
dataset refusals, resume-equals-uninterrupted, and DDP on the CPU (slow)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from data_helpers import make_dataset
from typer.testing import CliRunner

from recon.cli import app
from recon.train import (
    DatasetMismatchError,
    LitRecon,
    NonFiniteLossError,
    TrainConfig,
    load_train_config,
    train,
)

QUIET = {"enable_progress_bar": False, "enable_model_summary": False}


def _tiny_config(folder: Path, **overrides: object) -> TrainConfig:
    """quick.yaml on the 16 px, 2-wavelength random sets of `data_helpers`."""
    base = {
        "data.train": str(folder / "train.h5"),
        "data.val": str(folder / "val.h5"),
        "out_dir": str(folder / "runs"),
        "batch_size": 8,
        "epochs": 1,
    }
    return load_train_config("quick").with_overrides(**{**base, **overrides})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train.h5 (32 samples) and val.h5 (8) of random 16 px frames, 2 wavelengths."""
    folder = tmp_path_factory.mktemp("tiny")
    make_dataset(folder / "train.h5", n_samples=32)
    make_dataset(folder / "val.h5", n_samples=8)
    return folder


def _last(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)


# ----------------------------------------------------------------------------- learning
class _InitialValPixel(pl.Callback):
    """Validation pixel loss of the untrained model (normalised MSE), at train start."""

    value: float = float("nan")

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        module.eval()
        with torch.no_grad():
            terms = [module.loss_terms(b)["pixel"] for b in trainer.datamodule.val_dataloader()]
        module.train()
        self.value = float(torch.stack(terms).mean())


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Simulated 32 px ZWFS data: OPD up to 150 nm RMS over Noll 2-11, four wavelengths;
    train.h5 (256 samples) and val.h5 (64)."""
    from sim.config import load_sim_config
    from sim.generate import generate_dataset

    folder = tmp_path_factory.mktemp("simulated")
    sim = load_sim_config("quick").with_overrides(
        **{"pupil.npix": 32, "aberration.rms_max_nm": 150.0, "aberration.noll_max": 11}
    )
    generate_dataset(sim, folder / "train.h5", 256, split="train", device="cpu", progress=None)
    generate_dataset(sim, folder / "val.h5", 64, split="val", device="cpu", progress=None)
    return folder


@pytest.mark.parametrize(
    ("arch", "epochs", "factor"),
    [
        # 64 AdamW steps of a 35k-parameter PhENN: measured 1.06 -> 0.072 (15x)
        ("phenn", 4, 5.0),
        # 96 steps of the GRU network (quick widths): measured 1.07 -> 0.081 (13x)
        ("gru", 6, 5.0),
    ],
)
def test_learning_reduces_validation_loss(
    simulated: Path, tmp_path: Path, arch: str, epochs: int, factor: float
) -> None:
    """Training cuts the validation MSE of OPD / opd_scale by at least `factor` (the
    untrained model and a zero prediction both sit near 1 by the definition of
    opd_scale_nm)."""
    cfg = _tiny_config(
        simulated, arch=arch, batch_size=16, epochs=epochs, out_dir=str(tmp_path / "runs")
    )
    initial = _InitialValPixel()
    run_dir = train(cfg, callbacks=[initial], num_sanity_val_steps=0, **QUIET)
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    val_pixel = [float(r["val/pixel"]) for r in rows if r.get("val/pixel")]
    assert len(val_pixel) == epochs
    assert initial.value > 0.5, initial.value
    assert initial.value / val_pixel[-1] >= factor, (initial.value, val_pixel)


def test_deep_supervision_trains(tiny: Path, tmp_path: Path) -> None:
    """PhENN with deep supervision: the auxiliary maps enter the loss in training, the
    checkpoint loads as a plain one-map model for inference."""
    from recon.models import load_checkpoint

    kwargs = {"phenn": {"widths": [4, 8, 16], "deep_supervision": True}}
    cfg = _tiny_config(tiny, epochs=2, model_kwargs=kwargs, out_dir=str(tmp_path / "runs"))
    run_dir = train(cfg, **QUIET)
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    aux = [float(r["train/aux"]) for r in rows if r.get("train/aux")]
    assert len(aux) == 2 and all(v > 0 and v == v for v in aux)  # logged, finite, positive
    model, _ = load_checkpoint(run_dir)
    with torch.no_grad():
        out = model(torch.rand(2, 2, 16, 16) + 0.5)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 1, 16, 16)


# ----------------------------------------------------------------------------- CLI
def test_cli_train_then_resume(tiny: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "runs"
    args = ["train", "--config", "quick", "--data", str(tiny / "train.h5"), "--out", str(out)]
    result = runner.invoke(app, [*args, "--epochs", "1", "--batch-size", "8", "--no-progress"])
    assert result.exit_code == 0, result.output
    (run_dir,) = out.iterdir()
    assert run_dir.name.startswith("phenn-")
    for name in ("config.yaml", "metrics.csv", "checkpoints/best.ckpt", "checkpoints/last.ckpt",
                 "hardware.json"):  # fmt: skip
        assert (run_dir / name).is_file(), name
    assert "hardware: cpu plan, 32, eager" in result.output
    resolved = load_train_config(run_dir / "config.yaml")
    assert resolved.data.npix == 16 and resolved.data.wavelengths_um == [0.96, 1.2]
    assert _last(run_dir)["global_step"] == 4  # 32 samples, batch 8

    result = runner.invoke(
        app, ["train", "--resume", str(run_dir), "--epochs", "2", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    assert list(out.iterdir()) == [run_dir]  # continued in place
    assert _last(run_dir)["global_step"] == 8
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert {r["epoch"] for r in rows if r.get("val/loss")} == {"0", "1"}  # both attempts' logs
    lrs = [float(r["lr-AdamW"]) for r in rows if r.get("lr-AdamW")]
    assert lrs == pytest.approx([3e-3, 0.5 * (3e-3 + 1e-6)])  # cosine stretched to 2 epochs

    result = runner.invoke(app, ["train", "--resume", str(run_dir), "--lr", "0.1"])
    assert result.exit_code == 2 and "cannot change when resuming" in result.output


def test_cli_missing_dataset_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["train", "--data", str(tmp_path / "none.h5")])
    assert result.exit_code == 2
    assert "not found" in result.output and "sim generate --n" in result.output


def test_single_wavelength_subset(tiny: Path, tmp_path: Path) -> None:
    """--wavelengths 1.2: the GRU network trains on one frame; the checkpoint says so."""
    cfg = _tiny_config(tiny, arch="gru", out_dir=str(tmp_path), **{"data.wavelengths_um": [1.2]})
    meta = _last(train(cfg, **QUIET))["zwfs"]
    assert meta["wavelengths_m"] == pytest.approx([1.2e-6])
    assert meta["model_kwargs"]["in_ch"] == 1 and meta["arch"] == "gru"


# ----------------------------------------------------------------------------- failures
def test_nan_loss_stops_and_keeps_last_good_checkpoint(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = LitRecon.loss_terms

    def poisoned(self: LitRecon, batch: tuple) -> dict:
        terms = real(self, batch)
        if self.training and self.global_step >= 5:  # epoch 1 (4 steps per epoch)
            terms["loss"] = terms["loss"] * float("nan")
        return terms

    monkeypatch.setattr(LitRecon, "loss_terms", poisoned)
    cfg = _tiny_config(tiny, epochs=3, out_dir=str(tmp_path / "runs"))
    with pytest.raises(NonFiniteLossError, match=r"last good checkpoint: .*last\.ckpt"):
        train(cfg, **QUIET)
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert _last(run_dir)["global_step"] == 4  # saved after epoch 0, before the NaN
    state = _last(run_dir)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"data.wavelengths_um": [1.0]}, "wavelength 1 um is not available"),
        ({"data.npix": 32}, r"has 16 px, the config .* asks for 32 px"),
        ({"model_kwargs": {"phenn": {"widths": [4, 4, 4, 4, 4, 4]}}}, "not a multiple of 32"),
    ],
)
def test_mismatched_dataset_is_refused(tiny: Path, overrides: dict, match: str) -> None:
    with pytest.raises(DatasetMismatchError, match=match):
        train(_tiny_config(tiny, **overrides), **QUIET)


def _dataset_32(path: Path) -> Path:
    """A finished 32 px, 2-wavelength dataset (zeros), through the real writer."""
    import numpy as np
    from data_helpers import MODES, WAVELENGTHS_M, disk_pupil, small_attrs

    from data.writer import DatasetWriter

    pupil = disk_pupil(32)
    frames = np.repeat(pupil[None], 2, 0)
    z = np.zeros((2, 2, 32, 32), np.float32)
    with DatasetWriter(
        path,
        n_samples=2,
        wavelengths_m=WAVELENGTHS_M,
        modes=MODES,
        npix=32,
        pixel_scale_m=6 / 32,
        attrs=small_attrs(),
    ) as w:
        w.write_static(pupil, frames, frames)
        w.write_batch(0, z, z[:, 0], np.zeros((2, len(MODES)), np.float32), np.zeros(2, np.float32))
        return w.finalize()


def test_mismatched_validation_sampling_is_refused(tiny: Path, tmp_path: Path) -> None:
    other = _dataset_32(tmp_path / "val32.h5")
    with pytest.raises(DatasetMismatchError, match=r"validation dataset .* 32 px"):
        train(_tiny_config(tiny, **{"data.val": str(other)}), **QUIET)


# ----------------------------------------------------------------------------- resume
class _Crash(pl.Callback):
    """Stops the run at the start of epoch `at` (after the previous epoch's checkpoint)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.at:
            raise RuntimeError("simulated crash")


def test_interrupted_then_resumed_equals_uninterrupted(tiny: Path, tmp_path: Path) -> None:
    cfg = _tiny_config(tiny, epochs=3, out_dir=str(tmp_path / "runs"))
    straight = train(cfg, **QUIET)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg, callbacks=[_Crash(at=2)], **QUIET)
    crashed = max((tmp_path / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    assert crashed != straight and _last(crashed)["global_step"] == 8
    resumed = train(load_train_config(crashed / "config.yaml"), resume=crashed, **QUIET)
    a, b = _last(straight)["state_dict"], _last(resumed)["state_dict"]
    assert _last(resumed)["global_step"] == _last(straight)["global_step"] == 12
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6, msg=key)


# ----------------------------------------------------------------------------- DDP
def test_ddp_on_cpu_with_two_processes(tiny: Path, tmp_path: Path) -> None:
    """`recon train --devices 2 --accelerator cpu`: two gloo processes, each half the data
    (about 17 s on 2 cores: under the 30 s limit of the default suite)."""
    launcher = tmp_path / "recon_cli.py"
    launcher.write_text("from recon.cli import app\napp()\n")
    out = tmp_path / "runs"
    cmd = [
        sys.executable,
        str(launcher),
        "train",
        "--config",
        "quick",
        "--data",
        str(tiny / "train.h5"),
        "--out",
        str(out),
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--devices",
        "2",
        "--accelerator",
        "cpu",
        "--no-progress",
    ]
    root = Path(__file__).resolve().parents[1]  # this checkout, not another install
    path = os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=root)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (run_dir,) = out.iterdir()
    ckpt = _last(run_dir)
    # 32 samples over 2 ranks, batch 8: 2 steps per epoch (one process would take 4)
    assert ckpt["global_step"] == 2
    assert (run_dir / "metrics.csv").is_file()


def test_budget_stops_training_and_the_lr_follows_it(tiny: Path, tmp_path: Path) -> None:
    """`budget_s` ends a run of 10,000 epochs after ~4 s, and the cosine schedule has
    annealed by then (it follows the share of the budget spent, not the epochs)."""
    import time

    cfg = _tiny_config(tiny, epochs=10_000, budget_s=4.0, out_dir=str(tmp_path / "runs"))
    start = time.monotonic()
    run_dir = train(cfg, **QUIET)
    elapsed = time.monotonic() - start
    assert elapsed < 4.0 + 20.0, elapsed  # the budget plus start-up and the last epoch
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    lrs = [float(r["lr-AdamW"]) for r in rows if r.get("lr-AdamW")]
    epochs = {r["epoch"] for r in rows if r.get("val/loss")}
    assert 2 <= len(epochs) < 10_000
    assert lrs[-1] < 0.5 * lrs[0], lrs  # the schedule moved with the clock


def test_compile_on_the_cpu_trains_and_keeps_the_checkpoint_layout(
    tiny: Path, tmp_path: Path
) -> None:
    """`compile: true` runs through `torch.compile` (compiled graphs, not the eager
    fallback: hardware.json says which ran) and writes the same state_dict keys as an
    eager run."""
    eager = train(_tiny_config(tiny, out_dir=str(tmp_path / "eager"), compile=False), **QUIET)
    comp = train(_tiny_config(tiny, out_dir=str(tmp_path / "comp"), compile=True), **QUIET)
    status = json.loads((comp / "hardware.json").read_text())["compile_status"]
    assert status["compiled"] and status["graphs"] >= 1 and status["fallback"] is None, status
    a, b = _last(eager)["state_dict"], _last(comp)["state_dict"]
    assert a.keys() == b.keys()
    # same data and seed: the same validation loss up to kernel rounding (not the same
    # weights: Adam turns the rounding noise of near-zero gradients, e.g. the head's
    # piston-like bias, into full-size steps)
    val = [
        float(
            next(r for r in csv.DictReader((run / "metrics.csv").open()) if r["val/loss"])[
                "val/loss"
            ]
        )
        for run in (eager, comp)
    ]
    assert val[1] == pytest.approx(val[0], rel=0.02), val
