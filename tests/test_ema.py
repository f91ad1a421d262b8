"""`recon train --ema`: Lightning's weight averaging with an EMA update, as the run uses it.

Checkpoints hold the averaged weights as `state_dict` (what inference loads) and the raw
training weights as `current_model_state` (what a resume continues from).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from data_helpers import make_dataset

from recon.models import load_checkpoint
from recon.train import load_train_config, train

QUIET = {"enable_progress_bar": False, "enable_model_summary": False}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ema")
    make_dataset(folder / "train.h5", n_samples=32)
    make_dataset(folder / "val.h5", n_samples=8)
    return folder


def _config(folder: Path, tmp: Path, **overrides: object):
    base = {
        "data.train": str(folder / "train.h5"),
        "data.val": str(folder / "val.h5"),
        "out_dir": str(tmp / "runs"),
        "batch_size": 8,
        "epochs": 2,
        "ema_decay": 0.5,
    }
    return load_train_config("quick").with_overrides(**{**base, **overrides})


def test_checkpoint_holds_averaged_weights_and_resume_continues(tiny: Path, tmp_path: Path) -> None:
    run_dir = train(_config(tiny, tmp_path), **QUIET)
    raw = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    averaged, current = raw["state_dict"], raw["current_model_state"]
    assert averaged.keys() == current.keys()
    floats = [k for k, v in averaged.items() if v.is_floating_point() and "running" not in k]
    # 8 optimizer steps at decay 0.5: the average lags the raw weights
    assert any(not torch.equal(averaged[k], current[k]) for k in floats)
    model, _ = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, averaged[f"model.{name}"])
    # a resume with more epochs continues the same run from the raw weights
    resumed = train(_config(tiny, tmp_path, epochs=3), resume=run_dir, **QUIET)
    assert resumed == run_dir
    again = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert again["global_step"] == 3 * raw["global_step"] // 2
    assert "current_model_state" in again
