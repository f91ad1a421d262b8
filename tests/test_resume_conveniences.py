"""`sim generate --resume` with nothing to resume, `recon train --resume` given the --out parent."""

from __future__ import annotations

from pathlib import Path

import xarray as xr
from typer.testing import CliRunner

from recon.cli import app as recon_app
from recon.cli.train import resume_folder
from sim.cli import app as sim_app

runner = CliRunner()
TINY = ["--config", "quick", "--npix", "16", "--wavelengths", "1.0", "--device", "cpu"]


def test_generate_resume_without_partial_file_starts_the_run(tmp_path) -> None:
    out = tmp_path / "train.h5"
    result = runner.invoke(sim_app, ["generate", "--n", "5", *TINY, "--out", str(out), "--resume"])
    assert result.exit_code == 0, result.output
    assert "no partial run" in result.output and "starting it" in result.output
    assert xr.open_dataset(out, engine="h5netcdf")["intensity"].shape == (5, 1, 16, 16)


def test_generate_resume_of_a_sharded_run_without_shards_starts_it(tmp_path) -> None:
    out = tmp_path / "train.h5"
    args = ["generate", "--n", "6", *TINY, "--out", str(out), "--resume", "--workers", "2"]
    args += ["--batch-size", "3"]
    result = runner.invoke(sim_app, args)
    assert result.exit_code == 0, result.output
    assert "starting it" in result.output
    assert xr.open_dataset(out, engine="h5netcdf")["intensity"].shape[0] == 6


def test_generate_resume_of_a_complete_file_still_refuses(tmp_path) -> None:
    out = tmp_path / "train.h5"
    assert runner.invoke(sim_app, ["generate", "--n", "3", *TINY, "--out", str(out)]).exit_code == 0
    result = runner.invoke(sim_app, ["generate", "--n", "3", *TINY, "--out", str(out), "--resume"])
    assert result.exit_code != 0 and "starting it" not in result.output


def _run(parent: Path, name: str) -> Path:
    run = parent / name
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("arch: phenn\n")
    return run


def test_resume_folder_is_the_run_itself_or_the_one_run_in_a_parent(tmp_path, capsys) -> None:
    run = _run(tmp_path / "runs", "phenn-20261126-120000")
    assert resume_folder(run) == run
    assert resume_folder(tmp_path / "runs") == run
    assert "phenn-20261126-120000" in capsys.readouterr().out.replace("\n", "")  # rich wraps
    assert resume_folder(tmp_path / "missing") == tmp_path / "missing"  # the usual error later


def test_resume_parent_with_two_runs_is_a_one_line_error(tmp_path) -> None:
    _run(tmp_path / "runs", "phenn-20261126-120000")
    _run(tmp_path / "runs", "gru-20261126-130000")
    result = runner.invoke(recon_app, ["train", "--resume", str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1
    assert "2 run folders" in lines[0]
    assert "gru-20261126-130000" in lines[0] and "phenn-20261126-120000" in lines[0]
