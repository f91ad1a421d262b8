"""`recon train --online`: batches simulated on the device, seeded by (seed, step)."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from common.config import config_file
from recon.models import load_checkpoint
from recon.train import load_train_config, train
from recon.train.online import OnlineSimulator, _OnlineTrainBatches
from sim.config import load_sim_config
from sim.generate import generate_dataset

QUIET = {"enable_progress_bar": False, "enable_model_summary": False}


@pytest.fixture(scope="module")
def sim_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The quick system at 16 px and two wavelengths."""
    data = yaml.safe_load(config_file("quick", "sim").read_text())
    data["pupil"]["npix"] = 16
    data["wavelengths_um"] = [0.98, 1.2]
    path = tmp_path_factory.mktemp("online") / "sim16.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_batches_follow_the_step_and_never_repeat(sim_yaml: Path) -> None:
    sim = OnlineSimulator(load_sim_config(sim_yaml), seed=3, device=torch.device("cpu"))
    trainer = SimpleNamespace(world_size=2, global_rank=1, current_epoch=0)
    batches = _OnlineTrainBatches(sim, batch=4, steps=3, trainer=trainer)
    first = [y for _, y in batches]
    again = [y for _, y in batches]  # the same epoch again: the same samples
    for a, b in zip(first, again, strict=True):
        torch.testing.assert_close(a, b)
    trainer.current_epoch = 1  # the next epoch: new samples
    later = [y for _, y in batches]
    flat = torch.cat([*first, *later]).flatten(1)
    assert torch.unique(flat, dim=0).shape[0] == flat.shape[0]  # no aberration twice
    # step 0 of rank 1 of 2 holds the global samples 4..7: what a file of this stream holds
    _, y = sim.batch(np.arange(4, 8))
    torch.testing.assert_close(first[0], y)


@pytest.mark.device
@pytest.mark.parametrize("noisy", [False, True])
def test_online_sample_equals_the_generated_file(
    sim_yaml: Path, tmp_path: Path, noisy: bool, device: str
) -> None:
    """The simulator draws sample i as `sim generate` does, stream for stream, noise
    included (drawn on the device in both)."""
    import h5py

    from sim.aberrations import stream_id

    clean = load_sim_config(sim_yaml)
    noise = {"detector.photons": 1e5, "detector.read_noise_e": 2.0} if noisy else {}
    cfg = clean.with_overrides(**noise)
    path = generate_dataset(cfg, tmp_path / "train.h5", 5, split="train", device=device)
    sim = OnlineSimulator(cfg, cfg.seed, torch.device(device), stream_id("train"))
    x, y = sim.batch(np.arange(5))
    assert x.device.type == torch.device(device).type
    with h5py.File(path) as f:
        np.testing.assert_allclose(x.cpu().numpy(), f["intensity"][:], rtol=0, atol=1e-6)
        np.testing.assert_allclose(y[:, 0].cpu().numpy(), f["opd"][:], rtol=0, atol=1e-4)
    x_clean, _ = OnlineSimulator(clean, cfg.seed, torch.device(device), stream_id("train")).batch(
        np.arange(5)
    )
    assert torch.equal(x, x_clean) is not noisy


def test_online_training_runs_and_checkpoints(sim_yaml: Path, tmp_path: Path) -> None:
    cfg = load_train_config("quick").with_overrides(
        **{
            "online": True,
            "data.sim_config": str(sim_yaml),
            "data.val": str(tmp_path / "absent.h5"),
            "data.online_samples_per_epoch": 32,
            "data.online_val_samples": 16,
            "data.stats_samples": 32,
            "batch_size": 8,
            "epochs": 2,
            "out_dir": str(tmp_path / "runs"),
            "model_kwargs": {"phenn": {"widths": [4, 8]}},
        }
    )
    run_dir = train(cfg, **QUIET)
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert len([r for r in rows if r.get("val/loss")]) == 2
    model, meta = load_checkpoint(run_dir)
    assert meta["data"]["train"].startswith("online") and meta["npix"] == 16
    assert meta["global_step"] == 8  # 2 epochs of 32 samples in batches of 8
    assert meta["wavelengths_m"] == pytest.approx([0.98e-6, 1.2e-6])
    with torch.no_grad():
        assert model(torch.ones(1, 2, 16, 16)).shape == (1, 1, 16, 16)
