"""`sim show`: the PNG is written and the summary numbers match the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from data_helpers import NPIX, WAVELENGTHS_M, make_dataset, sample_arrays
from matplotlib.image import imread

from sim.show import pick_examples, show_dataset


def test_show_dataset_writes_png_and_true_summary(tmp_path: Path) -> None:
    path = make_dataset(tmp_path / "train.h5", n_samples=30)
    out = tmp_path / "plots" / "train.png"
    summary = show_dataset(path, out, n_examples=3)
    rms = sample_arrays(0, 30)[3].astype(np.float64)
    assert summary["n_samples"] == 30
    assert summary["npix"] == NPIX and summary["n_modes"] == 6
    assert summary["wavelengths_um"] == pytest.approx([w * 1e6 for w in WAVELENGTHS_M])
    assert summary["rms_min_nm"] == pytest.approx(rms.min())
    assert summary["rms_median_nm"] == pytest.approx(np.median(rms))
    assert summary["rms_max_nm"] == pytest.approx(rms.max())
    assert summary["file_size_bytes"] == path.stat().st_size
    assert summary["examples"][0] == int(np.argmin(rms))
    assert summary["examples"][-1] == int(np.argmax(rms))
    image = imread(out)
    rows, cols = image.shape[:2]  # 4 rows (3 examples + histogram) x 3 columns at 100 dpi
    assert (rows, cols) == (4 * 230, 3 * 260)
    assert image[..., :3].std() > 0.05  # not blank


def test_pick_examples_spans_the_rms_range() -> None:
    rms = np.array([5.0, 1.0, 9.0, 3.0, 7.0])
    assert pick_examples(rms, 3) == [1, 0, 2]  # smallest, median, largest
    assert pick_examples(rms, 10) == [1, 3, 0, 4, 2]
    assert pick_examples(rms, 0) == []
