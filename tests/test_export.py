"""`recon export`: TorchScript and ONNX match the eager model within 1e-5 (relative)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from recon.cli import app
from recon.models.export import export_model, max_export_error
from recon.train import load_train_config, train
from tests.data_helpers import make_dataset

runner = CliRunner()


@pytest.fixture(scope="module", params=["phenn", "gru"])
def checkpoint(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One epoch of the quick model on 16 px, 2-wavelength random data."""
    folder = tmp_path_factory.mktemp(f"export-{request.param}")
    make_dataset(folder / "train.h5", n_samples=16)
    cfg = load_train_config("quick").with_overrides(
        **{
            "arch": request.param,
            "data.train": str(folder / "train.h5"),
            "data.val": None,
            "out_dir": str(folder / "runs"),
            "epochs": 1,
            "batch_size": 8,
        }
    )
    run = train(cfg, enable_progress_bar=False, enable_model_summary=False)
    return run / "checkpoints" / "best.ckpt"


def test_torchscript_matches_eager_and_carries_metadata(checkpoint: Path, tmp_path: Path) -> None:
    path = export_model(checkpoint, "torchscript", tmp_path / "model.pt")
    assert max_export_error(checkpoint, path) < 1e-5
    extra = {"zwfs_meta.json": ""}
    torch.jit.load(str(path), _extra_files=extra)
    meta = json.loads(extra["zwfs_meta.json"])
    assert len(meta["wavelengths_m"]) == 2 and meta["npix"] == 16
    assert "nm" in meta["output"]


def test_onnx_matches_eager(checkpoint: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    path = export_model(checkpoint, "onnx", tmp_path / "model.onnx")
    assert max_export_error(checkpoint, path, batch=5) < 1e-5  # a batch size the export never saw


def test_cli_export_and_bad_format(checkpoint: Path, tmp_path: Path) -> None:
    run_dir = checkpoint.parents[1]
    result = runner.invoke(app, ["export", str(run_dir), "--out", str(tmp_path / "m.pt")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m.pt").is_file() and "max |exported - eager|" in result.output
    bad = runner.invoke(app, ["export", str(run_dir), "--format", "tflite"])
    assert bad.exit_code == 2 and "unknown --format" in bad.output
    missing = runner.invoke(app, ["export", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "Traceback" not in missing.output


@pytest.mark.device
def test_aoti_package_matches_eager_at_any_batch(
    checkpoint: Path, tmp_path: Path, device: str
) -> None:
    # the compiled path: torch.export + AOTInductor, kernels for the test device, any batch
    from recon.models.export import load_aoti

    out = str(tmp_path / "m.pt2")
    cmd = ["export", str(checkpoint), "--format", "aoti", "--out", out, "--device", device]
    result = runner.invoke(app, cmd)
    assert result.exit_code == 0, result.output
    path = tmp_path / "m.pt2"
    assert max_export_error(checkpoint, path, batch=5) < 1e-5  # a batch the export never saw
    meta = json.loads(load_aoti(path).get_metadata()["zwfs_meta"])
    assert len(meta["wavelengths_m"]) == 2 and meta["npix"] == 16
    assert not list(tmp_path.glob("*.tmp*"))  # written under a temporary name, then renamed
