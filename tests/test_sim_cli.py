"""`sim check` and `sim bench` from the command line (tiny settings)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from sim.cli import app

runner = CliRunner()


def test_check_prints_table_and_json(tmp_path) -> None:
    out = tmp_path / "check.json"
    result = runner.invoke(
        app, ["check", "--config", "quick", "--rms", "0,300", "--no-converged", "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "max |dI| / peak" in result.output
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 2 * 4  # two RMS values x four wavelengths
    assert all(r["max_abs_err"] < 1e-5 for r in rows)


def test_bench_writes_rows_for_every_peer(tmp_path) -> None:
    out = tmp_path / "bench.json"
    result = runner.invoke(
        app,
        [
            "bench",
            "--config",
            "quick",
            "--n",
            "8",
            "--n-reference",
            "1",
            "--batch",
            "4",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    meta = json.loads(out.read_text())
    peers = {r["peer"]: r for r in meta["rows"]}
    assert {"engine", "poppy"} <= set(peers)
    assert peers["poppy"]["speedup_vs_poppy"] == 1.0
    # same wavefronts, same sampling: engine and POPPY share their sampling error
    assert (
        abs(peers["engine"]["max_err_vs_converged"] - peers["poppy"]["max_err_vs_converged"]) < 1e-5
    )


def test_bad_config_is_one_line_error(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("wavelengths_um: [7.0]\n")
    result = runner.invoke(app, ["check", "--config", str(bad)])
    assert result.exit_code == 2
    assert "wavelengths_um" in result.output
    assert "Traceback" not in result.output
