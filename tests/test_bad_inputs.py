"""Every failure is one clean line: a sweep of bad inputs over every command.

Each case runs a `sim` or `recon` command in-process and asserts exit status 2, exactly
one non-empty line on stderr that starts with ``error:``, no traceback, and that every
file that existed before is byte-identical afterwards.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from data_helpers import disk_pupil, make_dataset, open_writer, static_arrays, write_batches
from typer.testing import CliRunner

from recon.cli import app as recon_app
from sim.cli import app as sim_app

runner = CliRunner()


@pytest.fixture(scope="module")
def fx(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny inputs, built once: datasets, a trained run, broken files, FITS frames."""
    from astropy.io import fits

    from recon.train import load_train_config, train

    root = tmp_path_factory.mktemp("bad")
    f: dict[str, Path] = {"root": root}
    f["train"] = make_dataset(root / "train.h5", n_samples=16)
    f["val"] = make_dataset(root / "val.h5", n_samples=8)
    cfg = load_train_config("quick").with_overrides(
        **{
            "data.train": str(f["train"]),
            "data.val": str(f["val"]),
            "out_dir": str(root / "runs"),
            "batch_size": 8,
            "epochs": 1,
        }
    )
    f["run"] = train(cfg, enable_progress_bar=False, enable_model_summary=False)
    f["ckpt"] = f["run"] / "checkpoints" / "last.ckpt"
    # a 24 px dataset: the wrong size for the 16 px network
    f["big"] = _dataset_npix(root / "big.h5", 24)
    # broken datasets
    raw = f["train"].read_bytes()
    (root / "truncated.h5").write_bytes(raw[: len(raw) // 3])
    f["truncated"] = root / "truncated.h5"
    (root / "junk.h5").write_bytes(b"this is not an HDF5 file\n" * 40)
    f["junk"] = root / "junk.h5"
    (root / "empty.h5").write_bytes(b"")
    f["empty"] = root / "empty.h5"
    import h5py

    with h5py.File(root / "other.h5", "w") as h:  # HDF5, but not a dataset of ours
        h["x"] = np.zeros(3)
    f["other"] = root / "other.h5"
    # an interrupted run: <out>.part with 4 of 10 samples
    w = open_writer(root / "stopped.h5")
    w.write_static(*static_arrays())
    write_batches(w, batch=2, stop=4)
    w.close()
    f["part"] = root / "stopped.h5.part"
    # broken checkpoints
    ck = f["ckpt"].read_bytes()
    (root / "truncated.ckpt").write_bytes(ck[: len(ck) // 2])
    f["bad_ckpt"] = root / "truncated.ckpt"
    (root / "junk.ckpt").write_bytes(os.urandom(2000))
    f["junk_ckpt"] = root / "junk.ckpt"
    # FITS frames: NaN, inf, and good clear/dark frames
    clear = np.pad(disk_pupil(16), 4).astype(np.float32)  # a 16 px pupil in a 24 px frame
    good = np.stack([clear * 0.7, clear * 0.9])
    for name, value in (("nan", np.nan), ("inf", np.inf)):
        frames = good.copy()
        frames[0, 12, 11] = value  # inside the pupil
        fits.writeto(root / f"{name}.fits", frames)
        f[f"{name}_fits"] = root / f"{name}.fits"
    fits.writeto(root / "good.fits", good)
    f["fits"] = root / "good.fits"
    fits.writeto(root / "clear.fits", clear)
    f["clear"] = root / "clear.fits"
    (root / "junk.fits").write_bytes(b"SIMPLE = nonsense\n")
    f["junk_fits"] = root / "junk.fits"
    # configs
    (root / "bad_field.yaml").write_text("pupil:\n  npix: 16\n  no_such_field: 3\n")
    f["bad_yaml"] = root / "bad_field.yaml"
    (root / "broken.yaml").write_text("pupil: [1, 2\n  npix: :\n")
    f["broken_yaml"] = root / "broken.yaml"
    (root / "bad_train.yaml").write_text("epochs: 1\nno_such_option: true\n")
    f["bad_train_yaml"] = root / "bad_train.yaml"
    # a regular file where a folder should be: nothing can be written under it
    (root / "a_file").write_text("x")
    f["under_file"] = root / "a_file" / "out.h5"
    return f


def _dataset_npix(path: Path, npix: int) -> Path:
    from data.writer import DatasetWriter

    pupil = np.ones((npix, npix), np.float32)
    wl = (0.96e-6, 1.20e-6)
    attrs = {"config": {"pupil": {"npix": npix}}, "engine": "test", "seed": 1, "split": "test"}
    with DatasetWriter(
        path,
        n_samples=4,
        wavelengths_m=wl,
        modes=(2, 3),
        npix=npix,
        pixel_scale_m=0.25,
        attrs=attrs,
    ) as w:
        ref = np.ones((2, npix, npix), np.float32)
        w.write_static(pupil, ref, ref)
        w.write_batch(
            0,
            intensity=np.ones((4, 2, npix, npix), np.float32),
            opd=np.zeros((4, npix, npix), np.float32),
            coefficients=np.zeros((4, 2), np.float32),
            rms=np.zeros(4, np.float32),
        )
    return path


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


S, R = "sim", "recon"
# (id, app, args built from the fixtures, where to write new files)
CASES: list[tuple[str, str, Callable[[dict[str, Path], Path], list[str]]]] = [
    # ---------------------------------------------------------------- sim generate
    (
        "gen-unknown-config",
        S,
        lambda f, t: ["generate", "--n", "4", "--config", "nope", "--out", str(t / "o.h5")],
    ),
    (
        "gen-bad-yaml-field",
        S,
        lambda f, t: [
            "generate",
            "--n",
            "4",
            "--config",
            str(f["bad_yaml"]),
            "--out",
            str(t / "o.h5"),
        ],
    ),
    (
        "gen-broken-yaml",
        S,
        lambda f, t: [
            "generate",
            "--n",
            "4",
            "--config",
            str(f["broken_yaml"]),
            "--out",
            str(t / "o.h5"),
        ],
    ),
    (
        "gen-bad-wavelengths",
        S,
        lambda f, t: ["generate", "--n", "4", "--wavelengths", "1.0,abc", "--out", str(t / "o.h5")],
    ),
    (
        "gen-negative-wavelength",
        S,
        lambda f, t: ["generate", "--n", "4", "--wavelengths", "-1.0", "--out", str(t / "o.h5")],
    ),
    ("gen-negative-n", S, lambda f, t: ["generate", "--n", "-5", "--out", str(t / "o.h5")]),
    (
        "gen-bad-split",
        S,
        lambda f, t: ["generate", "--n", "4", "--split", "nope", "--out", str(t / "o.h5")],
    ),
    (
        "gen-bad-engine",
        S,
        lambda f, t: ["generate", "--n", "4", "--engine", "nope", "--out", str(t / "o.h5")],
    ),
    (
        "gen-exists",
        S,
        lambda f, t: ["generate", "--n", "4", "--config", "quick", "--out", str(f["train"])],
    ),
    (
        "gen-under-a-file",
        S,
        lambda f, t: [
            "generate",
            "--n",
            "4",
            "--config",
            "quick",
            "--npix",
            "16",
            "--out",
            str(f["under_file"]),
        ],
    ),
    (
        "gen-zero-npix",
        S,
        lambda f, t: [
            "generate",
            "--n",
            "4",
            "--overwrite",
            "--config",
            "quick",
            "--npix",
            "0",
            "--out",
            str(t / "o.h5"),
        ],
    ),
    (
        "gen-resume-other-run",
        S,
        lambda f, t: [
            "generate",
            "--n",
            "10",
            "--resume",
            "--config",
            "quick",
            "--npix",
            "16",
            "--out",
            str(f["root"] / "stopped.h5"),
        ],
    ),
    # ---------------------------------------------------------------- sim show
    ("show-missing", S, lambda f, t: ["show", str(t / "missing.h5")]),
    ("show-truncated", S, lambda f, t: ["show", str(f["truncated"]), "--out", str(t / "s.png")]),
    ("show-junk", S, lambda f, t: ["show", str(f["junk"]), "--out", str(t / "s.png")]),
    ("show-empty", S, lambda f, t: ["show", str(f["empty"]), "--out", str(t / "s.png")]),
    ("show-not-ours", S, lambda f, t: ["show", str(f["other"]), "--out", str(t / "s.png")]),
    ("show-part-file", S, lambda f, t: ["show", str(f["part"]), "--out", str(t / "s.png")]),
    (
        "show-out-under-file",
        S,
        lambda f, t: ["show", str(f["train"]), "--out", str(f["root"] / "a_file" / "s.png")],
    ),
    # ---------------------------------------------------------------- sim check / bench
    ("check-unknown-config", S, lambda f, t: ["check", "--config", "nope"]),
    ("check-bad-rms", S, lambda f, t: ["check", "--rms", "10,abc"]),
    (
        "bench-bad-yaml",
        S,
        lambda f, t: ["bench", "--config", str(f["bad_yaml"]), "--out", str(t / "b.json")],
    ),
    ("bench-negative-n", S, lambda f, t: ["bench", "--n", "-3", "--out", str(t / "b.json")]),
    # ---------------------------------------------------------------- recon train
    (
        "train-unknown-config",
        R,
        lambda f, t: ["train", "--config", "nope", "--data", str(f["train"]), "--out", str(t)],
    ),
    (
        "train-bad-yaml-field",
        R,
        lambda f, t: [
            "train",
            "--config",
            str(f["bad_train_yaml"]),
            "--data",
            str(f["train"]),
            "--out",
            str(t),
        ],
    ),
    (
        "train-unknown-arch",
        R,
        lambda f, t: ["train", "--arch", "nope", "--data", str(f["train"]), "--out", str(t)],
    ),
    (
        "train-bad-wavelengths",
        R,
        lambda f, t: [
            "train",
            "--config",
            "quick",
            "--wavelengths",
            "x",
            "--data",
            str(f["train"]),
            "--out",
            str(t),
        ],
    ),
    (
        "train-missing-wavelength",
        R,
        lambda f, t: [
            "train",
            "--config",
            "quick",
            "--wavelengths",
            "0.5",
            "--data",
            str(f["train"]),
            "--out",
            str(t),
        ],
    ),
    (
        "train-truncated-data",
        R,
        lambda f, t: ["train", "--config", "quick", "--data", str(f["truncated"]), "--out", str(t)],
    ),
    (
        "train-junk-data",
        R,
        lambda f, t: ["train", "--config", "quick", "--data", str(f["junk"]), "--out", str(t)],
    ),
    (
        "train-part-data",
        R,
        lambda f, t: ["train", "--config", "quick", "--data", str(f["part"]), "--out", str(t)],
    ),
    ("train-resume-missing", R, lambda f, t: ["train", "--resume", str(t / "no_run")]),
    (
        "train-out-under-file",
        R,
        lambda f, t: [
            "train",
            "--config",
            "quick",
            "--data",
            str(f["train"]),
            "--epochs",
            "1",
            "--out",
            str(f["root"] / "a_file" / "runs"),
        ],
    ),
    # ---------------------------------------------------------------- recon eval
    (
        "eval-unknown-baseline",
        R,
        lambda f, t: ["eval", "--baseline", "nope", "--data", str(f["train"]), "--out", str(t)],
    ),
    ("eval-missing-data", R, lambda f, t: ["eval", "--data", str(t / "none.h5"), "--out", str(t)]),
    ("eval-junk-data", R, lambda f, t: ["eval", "--data", str(f["junk"]), "--out", str(t)]),
    (
        "eval-truncated-ckpt",
        R,
        lambda f, t: [
            "eval",
            str(f["bad_ckpt"]),
            "--data",
            str(f["train"]),
            "--out",
            str(t),
        ],
    ),
    (
        "eval-junk-ckpt",
        R,
        lambda f, t: [
            "eval",
            str(f["junk_ckpt"]),
            "--data",
            str(f["train"]),
            "--out",
            str(t),
        ],
    ),
    (
        "eval-mismatched-data",
        R,
        lambda f, t: [
            "eval",
            str(f["run"]),
            "--data",
            str(f["big"]),
            "--out",
            str(t),
        ],
    ),
    # ---------------------------------------------------------------- recon loop
    (
        "loop-unknown-baseline",
        R,
        lambda f, t: ["loop", "--baseline", "nope", "--data", str(f["train"]), "--out", str(t)],
    ),
    (
        "loop-truncated-data",
        R,
        lambda f, t: [
            "loop",
            "--baseline",
            "analytic",
            "--data",
            str(f["truncated"]),
            "--out",
            str(t),
        ],
    ),
    (
        "loop-analytic-on-a-foreign-system",
        R,
        lambda f, t: [
            "loop",
            "--baseline",
            "analytic",
            "--gain",
            "5",
            "--data",
            str(f["train"]),
            "--out",
            str(t),
        ],
    ),
    # ---------------------------------------------------------------- recon predict
    (
        "predict-nan-frames",
        R,
        lambda f, t: [
            "predict",
            str(f["run"]),
            "--frames",
            str(f["nan_fits"]),
            "--clear",
            str(f["clear"]),
            "--out",
            str(t / "p.fits"),
        ],
    ),
    (
        "predict-inf-frames",
        R,
        lambda f, t: [
            "predict",
            str(f["run"]),
            "--frames",
            str(f["inf_fits"]),
            "--clear",
            str(f["clear"]),
            "--out",
            str(t / "p.fits"),
        ],
    ),
    (
        "predict-junk-fits",
        R,
        lambda f, t: [
            "predict",
            str(f["run"]),
            "--frames",
            str(f["junk_fits"]),
            "--clear",
            str(f["clear"]),
            "--out",
            str(t / "p.fits"),
        ],
    ),
    (
        "predict-missing-frames",
        R,
        lambda f, t: [
            "predict",
            str(f["run"]),
            "--frames",
            str(t / "none.fits"),
            "--clear",
            str(f["clear"]),
            "--out",
            str(t / "p.fits"),
        ],
    ),
    (
        "predict-junk-ckpt",
        R,
        lambda f, t: [
            "predict",
            str(f["junk_ckpt"]),
            "--data",
            str(f["train"]),
            "--out",
            str(t / "p.h5"),
        ],
    ),
    (
        "predict-missing-run",
        R,
        lambda f, t: [
            "predict",
            str(t / "no_run"),
            "--data",
            str(f["train"]),
            "--out",
            str(t / "p.h5"),
        ],
    ),
    (
        "predict-mismatched-data",
        R,
        lambda f, t: ["predict", str(f["run"]), "--data", str(f["big"]), "--out", str(t / "p.h5")],
    ),
    (
        "predict-out-under-file",
        R,
        lambda f, t: [
            "predict",
            str(f["run"]),
            "--data",
            str(f["train"]),
            "--out",
            str(f["root"] / "a_file" / "p.h5"),
        ],
    ),
    # ---------------------------------------------------------------- recon export
    (
        "export-unknown-format",
        R,
        lambda f, t: ["export", str(f["run"]), "--format", "nope", "--out", str(t / "m.pt")],
    ),
    (
        "export-truncated-ckpt",
        R,
        lambda f, t: ["export", str(f["bad_ckpt"]), "--out", str(t / "m.pt")],
    ),
    (
        "export-missing-ckpt",
        R,
        lambda f, t: ["export", str(t / "none.ckpt"), "--out", str(t / "m.pt")],
    ),
    (
        "export-out-under-file",
        R,
        lambda f, t: ["export", str(f["run"]), "--out", str(f["root"] / "a_file" / "m.pt")],
    ),
    # ---------------------------------------------------------------- recon distill
    (
        "distill-unknown-arch",
        R,
        lambda f, t: [
            "distill",
            "--teacher",
            str(f["run"]),
            "--arch",
            "nope",
            "--data",
            str(f["train"]),
            "--out",
            str(t),
        ],
    ),
    (
        "distill-junk-teacher",
        R,
        lambda f, t: [
            "distill",
            "--teacher",
            str(f["junk_ckpt"]),
            "--arch",
            "phenn",
            "--data",
            str(f["train"]),
            "--out",
            str(t),
        ],
    ),
    (
        "distill-missing-teacher",
        R,
        lambda f, t: [
            "distill",
            "--teacher",
            str(t / "no_run"),
            "--arch",
            "phenn",
            "--data",
            str(f["train"]),
            "--out",
            str(t),
        ],
    ),
    (
        "distill-mismatched-data",
        R,
        lambda f, t: [
            "distill",
            "--teacher",
            str(f["run"]),
            "--arch",
            "phenn",
            "--config",
            "quick",
            "--data",
            str(f["big"]),
            "--out",
            str(t),
        ],
    ),
    # ---------------------------------------------------------------- recon info / bench
    ("info-unknown-arch", R, lambda f, t: ["info", "--arch", "nope"]),
    (
        "info-unknown-block",
        R,
        lambda f, t: ["info", "--arch", "phenn", "--block", "nope", "--npix", "16"],
    ),
    ("bench-unknown-arch", R, lambda f, t: ["bench", "--arch", "nope", "--out", str(t / "b.json")]),
    ("digits-no-seeds", R, lambda f, t: ["digits", "--seeds", "0", "--out", str(t / "d.json")]),
]


@pytest.mark.parametrize(("name", "which", "build"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clean_line(
    fx: dict[str, Path], tmp_path: Path, name: str, which: str, build: Callable
) -> None:
    args = build(fx, tmp_path)
    before = _hashes(fx["root"])
    result = runner.invoke(sim_app if which == S else recon_app, args)
    err = result.stderr
    lines = [line for line in err.splitlines() if line.strip()]
    assert result.exit_code == 2, (result.exit_code, result.stdout[-2000:], err[-3000:])
    assert "Traceback" not in err + result.stdout, err[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert _hashes(fx["root"]) == before, "a pre-existing file changed"


def test_the_sweep_covers_every_command() -> None:
    covered = {(which, build(_ANY, Path("/x"))[0]) for _, which, build in CASES}
    for cmd in ("generate", "show", "check", "bench"):
        assert (S, cmd) in covered
    for cmd in ("train", "eval", "loop", "predict", "export", "distill", "info", "bench", "digits"):
        assert (R, cmd) in covered
    assert len(CASES) >= 30


class _Any(dict):
    def __missing__(self, key: str) -> Path:
        return Path("/x") / key


_ANY = _Any()


def test_predict_refuses_to_overwrite_an_existing_file(tmp_path: Path) -> None:
    """`recon predict --out` onto an existing file: one line, the file untouched (without
    --overwrite); checked before any model is loaded."""
    from typer.testing import CliRunner

    from recon.cli import app

    existing = tmp_path / "opd.h5"
    existing.write_bytes(b"keep me")
    result = CliRunner().invoke(
        app, ["predict", str(tmp_path / "no-run"), "--data", str(existing), "--out", str(existing)]
    )
    assert result.exit_code == 2
    assert "already exists; use --overwrite" in result.output
    assert existing.read_bytes() == b"keep me"


@pytest.mark.parametrize(
    ("cli", "args", "words"),
    [
        ("sim", ["generate", "--no-such-option"], "No such option"),
        ("recon", ["loop", "--iterations", "0"], "--iterations"),
        ("recon", ["train", "--epochs", "many"], "--epochs"),
    ],
)
def test_usage_errors_are_one_line(cli: str, args: list[str], words: str) -> None:
    """Click's own usage errors (unknown option, bad value) read as one line, exit 2."""
    from typer.testing import CliRunner

    from recon.cli import app as recon_app
    from sim.cli import app as sim_app

    result = CliRunner().invoke(sim_app if cli == "sim" else recon_app, args)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], lines
