"""`recon info` through Typer's CliRunner."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from recon.cli import app
from recon.nn import count_parameters, create_model, list_blocks, list_models

runner = CliRunner()


def test_info_list_names_every_registry() -> None:
    result = runner.invoke(app, ["info", "--list"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("models:") and "unet" in lines[0]
    assert lines[1] == "blocks: " + ", ".join(list_blocks())
    assert lines[2].startswith("losses:")


def test_info_json_reports_complexity() -> None:
    args = ["info", "--arch", "unet", "--npix", "16", "--in-ch", "2", "--block", "dwsep"]
    result = runner.invoke(app, [*args, "--repeats", "1", "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    expected = count_parameters(create_model("unet", in_ch=2, block="dwsep"))
    assert record["params"] == expected
    assert record["gflops"] > 0 and record["latency_ms"] > 0
    assert record["input_shape"] == [1, 2, 16, 16]


def test_info_table() -> None:
    result = runner.invoke(app, ["info", "--arch", "unet", "--npix", "8", "--repeats", "1"])
    assert result.exit_code == 0, result.output
    assert "GFLOPs" in result.output and "params" in result.output


def test_info_unknown_arch_exits_2_with_one_line() -> None:
    result = runner.invoke(app, ["info", "--arch", "no_such_net"])
    assert result.exit_code == 2
    assert result.exception is None or isinstance(result.exception, SystemExit)
    message = result.output.strip()
    assert len(message.splitlines()) == 1
    assert "no_such_net" in message and "unet" in message and "Traceback" not in message
    assert set(list_models()) >= {"unet"}


def test_info_bad_size_exits_2_with_one_line() -> None:
    result = runner.invoke(app, ["info", "--arch", "unet", "--npix", "12"])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1 and "divisible by 8" in result.output
