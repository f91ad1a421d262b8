"""`recon distill`: feature taps, the distillation loss and its gradients, the CLI run
folder and its checkpoint, and the refusal of data that do not fit the teacher."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from data_helpers import MODES, make_dataset, sample_arrays, static_arrays
from typer.testing import CliRunner

from common.config import config_file
from recon.cli import app
from recon.models import NormStats, build_model, load_checkpoint
from recon.nn.complexity import count_parameters
from recon.train import load_train_config, train
from recon.train.distill import FeatureTap, LitDistill

QUIET = {"enable_progress_bar": False, "enable_model_summary": False}
TEACHER_KW = {"widths": [8, 16, 32], "separable": True}  # quick.yaml's gru: 4x4 bottleneck
STUDENT_KW = {"widths": [4, 8], "blocks_per_stage": 1}  # 2 levels: 8x8 deepest feature
STATS = NormStats((1.0, 1.0), (0.5, 0.5), 100.0, 32)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train.h5 (32) and val.h5 (8) random 16 px frames at 0.96 and 1.2 um (data_helpers)."""
    folder = tmp_path_factory.mktemp("tiny")
    make_dataset(folder / "train.h5", n_samples=32)
    make_dataset(folder / "val.h5", n_samples=8)
    return folder


@pytest.fixture(scope="module")
def teacher_run(tiny: Path) -> Path:
    """A gru teacher (quick.yaml widths) trained for 1 epoch on `tiny`."""
    cfg = load_train_config("quick").with_overrides(
        **{
            "arch": "gru",
            "data.train": str(tiny / "train.h5"),
            "data.val": str(tiny / "val.h5"),
            "out_dir": str(tiny / "runs"),
            "batch_size": 8,
            "epochs": 1,
        }
    )
    return train(cfg, **QUIET)


def _student_yaml(folder: Path) -> Path:
    """quick.yaml with a 2-level, 4-8 channel phenn."""
    data = yaml.safe_load(config_file("quick", "recon").read_text())
    data["model_kwargs"]["phenn"] = STUDENT_KW
    path = folder / "student.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _batch(n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    inten, opd, _, _ = sample_arrays(0, n)
    return torch.from_numpy(inten), torch.from_numpy(opd)[:, None]  # (B, 2, 16, 16), (B, 1, ..)


# ----------------------------------------------------------------------------- units
def test_gru_tap_is_the_final_hidden_state_of_the_coarsest_scale() -> None:
    model = build_model("gru", TEACHER_KW, 2, STATS).eval()
    tap = FeatureTap(model)
    x = model.normalize(_batch()[0])
    with torch.no_grad():
        model.net(x)
        state = None
        for t in range(x.shape[1]):  # frame by frame: the same recurrence
            state = model.net.step(x[:, t], state)
    assert tap.channels == 32
    assert torch.allclose(tap.pop(), state[-1], atol=1e-6)
    with pytest.raises(RuntimeError, match="no feature captured"):
        tap.pop()


def test_phenn_tap_is_the_bottleneck() -> None:
    model = build_model("phenn", STUDENT_KW, 2, STATS)
    tap = FeatureTap(model)
    model(_batch()[0])
    assert tap.channels == 8 and tap.pop().shape == (4, 8, 8, 8)  # 16 px / 2


def test_distillation_terms_are_nonzero_and_train_the_student() -> None:
    teacher = build_model("gru", TEACHER_KW, 2, STATS)
    student = build_model("phenn", STUDENT_KW, 2, STATS)
    cfg = load_train_config("quick").with_overrides(arch="phenn")
    pupil = torch.from_numpy(static_arrays()[0])
    lit = LitDistill(cfg, student, teacher, pupil, {}, w_response=1.0, w_feature=0.5)
    lit.train()
    assert not teacher.training  # frozen in eval mode whatever the LightningModule's mode
    assert not any(n.startswith("teacher") for n in lit.state_dict())  # not saved
    assert {id(p) for p in teacher.parameters()}.isdisjoint(id(p) for p in lit.parameters())

    terms = lit.loss_terms(_batch())
    assert terms["response"] > 0 and terms["feature"] > 0
    expected = terms["task"] + 1.0 * terms["response"] + 0.5 * terms["feature"]
    assert torch.allclose(terms["loss"], expected)

    # each distillation term alone reaches the student (and the feature one the connector)
    for key, reached in (("response", student.net.unet.head), ("feature", lit.feature)):
        lit.zero_grad()
        terms = lit.loss_terms(_batch())
        terms[key].backward()
        grads = [p.grad for p in reached.parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in grads), key
        enc = student.net.unet.encoder.stem
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.parameters()), key
    assert all(p.grad is None for p in teacher.parameters())


# ----------------------------------------------------------------------------- CLI
def test_cli_distill_makes_a_smaller_loadable_student(
    tiny: Path, teacher_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "runs"
    args = ["distill", "--teacher", str(teacher_run), "--arch", "phenn"]
    args += ["--config", str(_student_yaml(tmp_path)), "--data", str(tiny / "train.h5")]
    args += ["--epochs", "2", "--batch-size", "8", "--w-feature", "0.5", "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--no-progress"])
    assert result.exit_code == 0, result.output
    (run_dir,) = out.iterdir()
    assert run_dir.name.startswith("phenn-distill-")
    for name in ("config.yaml", "distill.yaml", "metrics.csv", "checkpoints/best.ckpt"):
        assert (run_dir / name).is_file(), name

    student, meta = load_checkpoint(run_dir / "checkpoints" / "best.ckpt")
    teacher, tmeta = load_checkpoint(teacher_run / "checkpoints" / "best.ckpt")
    assert meta["arch"] == "phenn" and meta["model_kwargs"]["widths"] == [4, 8]
    assert meta["teacher"] == str((teacher_run / "checkpoints" / "best.ckpt").absolute())
    assert meta["distillation"]["w_response"] == 1.0 and meta["distillation"]["w_feature"] == 0.5
    assert meta["wavelengths_m"] == tmeta["wavelengths_m"] and meta["npix"] == tmeta["npix"]
    assert meta["normalization"] == tmeta["normalization"]  # the teacher's statistics
    assert count_parameters(student) < count_parameters(teacher)
    with torch.no_grad():
        assert student(_batch()[0]).shape == (4, 1, 16, 16)

    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    val = [r for r in rows if r.get("val/response")]
    assert len(val) == 2 and all(float(r["val/feature"]) > 0 for r in val)
    train_rows = [r for r in rows if r.get("train/feature")]
    assert train_rows and float(train_rows[-1]["train/response"]) > 0

    summary = json.loads((run_dir / "distill_summary.json").read_text())["results"]
    assert [r["model"] for r in summary] == ["teacher", "student"]
    assert summary[1]["params"] < summary[0]["params"]
    assert all(np.isfinite(r["val_residual_rms_nm_median"]) for r in summary)
    assert "teacher" in result.output and "student" in result.output


def _other_wavelengths(path: Path) -> Path:
    """16 px data at 1.0 and 1.2 um (the teacher knows 0.96 and 1.2)."""
    from data_helpers import PIXEL_SCALE_M, small_attrs

    from data.writer import DatasetWriter

    with DatasetWriter(
        path,
        n_samples=8,
        wavelengths_m=(1.0e-6, 1.2e-6),
        modes=MODES,
        npix=16,
        pixel_scale_m=PIXEL_SCALE_M,
        attrs=small_attrs(),
    ) as w:
        w.write_static(*static_arrays())
        w.write_batch(0, *sample_arrays(0, 8))
        return w.finalize()


def test_cli_refuses_data_that_do_not_fit_the_teacher(teacher_run: Path, tmp_path: Path) -> None:
    data = _other_wavelengths(tmp_path / "train.h5")
    args = ["distill", "--teacher", str(teacher_run), "--arch", "phenn", "--config", "quick"]
    result = CliRunner().invoke(app, [*args, "--data", str(data), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    message = result.output.strip()
    assert "\n" not in message and "teacher" in message, message
    assert "wavelength 0.96 um is not available" in message, message
    assert not (tmp_path / "r").exists()  # no run folder for a refused run


def test_cli_missing_teacher_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["distill", "--teacher", str(tmp_path), "--arch", "phenn"])
    assert result.exit_code == 2 and "no checkpoints/best.ckpt or last.ckpt" in result.output
