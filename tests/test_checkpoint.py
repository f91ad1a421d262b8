"""`recon.checkpoint.load_checkpoint`: a checkpoint alone rebuilds the model, without Lightning."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from data_helpers import make_dataset

from data.schema import pupil_mask
from recon.models import CHECKPOINT_FORMAT, CheckpointError, load_checkpoint, read_meta
from recon.train import LitRecon, load_train_config, train

ROOT = Path(__file__).resolve().parents[1]  # this checkout (subprocesses import from it)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One epoch of the quick gru on 16 px, 2-wavelength random data."""
    folder = tmp_path_factory.mktemp("ckpt")
    make_dataset(folder / "train.h5", n_samples=16)
    cfg = load_train_config("quick").with_overrides(
        **{
            "arch": "gru",
            "data.train": str(folder / "train.h5"),
            "data.val": None,
            "out_dir": str(folder / "runs"),
            "epochs": 1,
            "batch_size": 8,
        }
    )
    return train(cfg, enable_progress_bar=False, enable_model_summary=False)


def _input() -> torch.Tensor:
    return torch.rand(3, 2, 16, 16, generator=torch.Generator().manual_seed(1)) * 2


def test_load_without_lightning_matches_training_module(run_dir: Path) -> None:
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    script = (
        "import json, sys, torch\n"
        "from recon.estimators import NetworkEstimator\n"
        f"est = NetworkEstimator.from_checkpoint({str(run_dir)!r})\n"
        "x = torch.rand(3, 2, 16, 16, generator=torch.Generator().manual_seed(1)) * 2\n"
        "y = est.estimate(x)\n"
        "print(json.dumps({'lightning': 'lightning' in sys.modules or 'pytorch_lightning' in\n"
        "  sys.modules, 'y': y.tolist(), 'arch': est.meta['arch'], 'npix': est.npix}))\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["lightning"] is False
    assert out["arch"] == "gru" and out["npix"] == 16
    # the same numbers as the Lightning module restored by Lightning's own loader
    raw = torch.load(ckpt, weights_only=True)
    model, meta = load_checkpoint(ckpt)
    lit = LitRecon(load_train_config(run_dir / "config.yaml"), model, meta["pupil"], meta)
    lit.load_state_dict(raw["state_dict"])
    with torch.no_grad():
        expected = lit.eval()(_input())[:, 0]  # (B, H, W) [nm]
    inside = torch.as_tensor(pupil_mask(meta["pupil"].numpy()))
    expected = expected - expected[:, inside].mean(dim=1)[:, None, None]  # the piston contract
    torch.testing.assert_close(torch.tensor(out["y"]), expected, rtol=1e-5, atol=1e-4)


def test_checkpoint_describes_itself(run_dir: Path) -> None:
    meta = read_meta(run_dir / "checkpoints" / "last.ckpt")
    assert meta["arch"] == "gru"
    assert meta["model_kwargs"]["in_ch"] == 2 and meta["model_kwargs"]["widths"] == [8, 16, 32]
    assert meta["wavelengths_m"] == pytest.approx([0.96e-6, 1.20e-6])
    assert meta["npix"] == 16 and tuple(meta["pupil"].shape) == (16, 16)
    norm = meta["normalization"]
    assert len(norm["intensity_mean"]) == 2 and norm["opd_scale_nm"] > 0
    assert meta["train_config"]["arch"] == "gru"
    assert meta["sim_config"]["pupil"]["npix"] == 16  # the dataset's config attribute
    assert meta["global_step"] == 1  # 14 training samples (2 split off), batch 8, drop_last
    model, _ = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert not model.training
    assert model.opd_scale_nm == pytest.approx(norm["opd_scale_nm"])


def test_other_format_version_is_refused(run_dir: Path, tmp_path: Path) -> None:
    raw = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    raw["zwfs"]["format_version"] = CHECKPOINT_FORMAT[1] + 1  # a future release's file
    future = tmp_path / "future.ckpt"
    torch.save(raw, future)
    with pytest.raises(CheckpointError, match=r"version 2; this zwfs reads .* version 1") as info:
        load_checkpoint(future)
    assert "\n" not in str(info.value)
    del raw["zwfs"]["format"]  # a file from before the format was recorded
    torch.save(raw, future)
    with pytest.raises(CheckpointError, match="format None"):
        read_meta(future)


def test_not_a_checkpoint_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "x.ckpt"
    torch.save({"state_dict": {}}, bad)
    with pytest.raises(CheckpointError, match="not a recon train checkpoint"):
        load_checkpoint(bad)
    (tmp_path / "junk.ckpt").write_text("junk")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "junk.ckpt")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.ckpt")


@pytest.mark.parametrize(
    ("old_kw", "expect"),
    [
        ({"cell": "classic", "recurrent_scales": None}, ("classic", None)),  # the first GRU
        ({"recurrent_scales": None}, ("fused", None)),  # fused cell, GRU at every scale
        ({"recurrent_scales": 2}, ("fused", 2)),
    ],
)
def test_checkpoint_of_an_older_gru_layout_still_loads(
    run_dir: Path, tmp_path: Path, old_kw: dict, expect: tuple
) -> None:
    """Checkpoints written before `cell` and `recurrent_scales` were arguments (their
    model_kwargs name neither) rebuild in the layout of their weights, with its output."""
    from recon.models import NormStats, build_model

    raw = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    meta = raw["zwfs"]
    kwargs = {k: v for k, v in meta["model_kwargs"].items() if k not in ("in_ch", "out_ch")}
    stats = NormStats.from_dict(meta["normalization"])
    torch.manual_seed(3)
    old = build_model("gru", {**kwargs, **old_kw}, 2, stats).eval()
    raw["state_dict"] = {f"model.{k}": v for k, v in old.state_dict().items()}
    assert "cell" not in meta["model_kwargs"] and "recurrent_scales" not in meta["model_kwargs"]
    torch.save(raw, tmp_path / "old.ckpt")
    model, _ = load_checkpoint(tmp_path / "old.ckpt")
    net = model.net
    assert (net.fused, len(net.cells)) == (expect[0] == "fused", expect[1] or len(net.cells))
    assert net.stacked is None if expect[1] is None else net.stacked is not None
    with torch.no_grad():
        torch.testing.assert_close(model(_input()), old(_input()))
