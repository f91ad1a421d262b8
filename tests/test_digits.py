"""The digits task: the split, the augmentation, and the reduced study through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

pytest.importorskip("sklearn", reason="the digits task needs the 'digits' extra")

from recon.cli import app
from recon.digits import load_digits_split
from recon.digits.fit import random_shift


def test_split_is_stratified_and_holds_every_image() -> None:
    d = load_digits_split(test_fraction=0.25, seed=0)
    assert len(d.y_train) + len(d.y_test) == 1797
    assert d.x_train.shape[1:] == (1, 8, 8) and 0 <= d.x_train.min() < d.x_train.max() <= 1
    share = torch.bincount(d.y_test, minlength=10) / torch.bincount(d.y_train, minlength=10)
    assert torch.allclose(share, torch.full((10,), 1 / 3), atol=0.02)  # 25 % : 75 %
    nine = d.without(4)
    assert 4 not in nine.y_train and 4 not in nine.y_test
    assert len(nine.y_test) == len(d.y_test) - int((d.y_test == 4).sum())


def test_random_shift_moves_each_image_by_at_most_the_shift() -> None:
    x = torch.zeros(64, 1, 8, 8)
    x[:, 0, 3, 4] = 1.0  # one lit pixel, away from the border
    g = torch.Generator().manual_seed(0)
    assert torch.equal(random_shift(x, 0, g), x)
    moved = random_shift(x, 1, g)
    assert torch.equal(moved.sum((1, 2, 3)), x.sum((1, 2, 3)))  # nothing lost
    where = moved[:, 0].flatten(1).argmax(1)
    rows, cols = where // 8, where % 8
    assert (rows - 3).abs().max() == 1 and (cols - 4).abs().max() == 1  # moved, by <= 1
    assert len(set(zip(rows.tolist(), cols.tolist(), strict=True))) == 9  # every shift drawn


def test_reduced_study_runs_and_learns(tmp_path: Path) -> None:
    """`recon digits --quick`: a classifier, a one-shot class, a distilled student. A few
    epochs are far from the full study's numbers, but far above chance (10 %)."""
    out = tmp_path / "digits.json"
    result = CliRunner().invoke(app, ["digits", "--quick", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "| block |" in result.output
    record = json.loads(out.read_text())
    (row,) = record["blocks"]
    assert row["params"] <= 20_000 * 1.03 and row["flops"] > 0 and row["latency_ms"] > 0
    assert row["accuracy"]["mean"] > 0.6
    five = next(r for r in record["done"] if r["shots"] == 5)
    assert five["new"] > 0.3  # the new class is recognised with no training
    assert five["old_after"] > five["old_before"] - 0.1  # the old ones mostly kept
    dist = record["distillation"]
    assert dist["teacher"]["params"] > dist["student"]["params"]
    assert set(dist["accuracy"]) == {"alone", "KD", "KD + feature"}
    assert all(a["mean"] > 0.3 for a in dist["accuracy"].values())
