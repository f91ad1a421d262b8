"""`recon train` killed with SIGKILL at a random moment, then `--resume`d, ends with the
same weights as an uninterrupted run (checkpoints are written atomically, the data order
is seeded per epoch)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from data_helpers import make_dataset

from recon.train.checkpoint_io import AtomicCheckpointIO, atomic_torch_save

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 25  # long enough that a kill within 0.5 s of the first checkpoint interrupts it


def _cmd(launcher: Path, *args: str) -> list[str]:
    return [sys.executable, str(launcher), "train", *args, "--no-progress"]


def _env() -> dict[str, str]:
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}


def _last(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)


def test_atomic_save_leaves_the_old_file_or_the_new_one(tmp_path: Path) -> None:
    path = tmp_path / "ck" / "last.ckpt"
    atomic_torch_save({"a": torch.ones(3)}, path)
    AtomicCheckpointIO().save_checkpoint({"a": torch.zeros(3)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.zeros(3))
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no temp file left


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted(tmp_path: Path) -> None:
    make_dataset(tmp_path / "train.h5", n_samples=32)
    make_dataset(tmp_path / "val.h5", n_samples=8)
    launcher = tmp_path / "recon_cli.py"
    launcher.write_text("from recon.cli import app\napp()\n")
    common = ["--config", "quick", "--data", str(tmp_path / "train.h5")]
    common += ["--epochs", str(EPOCHS), "--batch-size", "8", "--placement", "device"]

    straight_out, killed_out = tmp_path / "straight", tmp_path / "killed"
    proc = subprocess.Popen(
        _cmd(launcher, *common, "--out", str(killed_out)),
        env=_env(),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not list(killed_out.glob("*/checkpoints/last.ckpt")):
            assert proc.poll() is None, "the run ended before its first checkpoint"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(random.Random(13).uniform(0.0, 0.5))  # a seeded random moment after it
        assert proc.poll() is None, "the run finished before the kill"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    (run_dir,) = killed_out.iterdir()
    assert _last(run_dir)["global_step"] < 4 * EPOCHS  # really interrupted

    resumed = subprocess.run(
        _cmd(launcher, "--resume", str(run_dir)),
        env=_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    straight = subprocess.run(
        _cmd(launcher, *common, "--out", str(straight_out)),
        env=_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert straight.returncode == 0, straight.stderr[-3000:]
    (straight_dir,) = straight_out.iterdir()

    a, b = _last(straight_dir), _last(run_dir)
    assert a["global_step"] == b["global_step"] == 4 * EPOCHS
    for key in a["state_dict"]:
        torch.testing.assert_close(
            b["state_dict"][key], a["state_dict"][key], rtol=1e-5, atol=1e-6, msg=key
        )
