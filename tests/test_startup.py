"""Start-up: `sim --help` and `recon --help` load neither torch nor numpy (the CLIs import
what a command needs when it runs), and every command's own help still works."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROBE = """
import sys
from {module} import app
try:
    app({args!r})
except SystemExit as exit:
    assert exit.code in (0, None), exit.code
heavy = sorted(m for m in ("torch", "numpy", "h5py", "pydantic", "scipy") if m in sys.modules)
print("HEAVY", ",".join(heavy))
"""


def _heavy_modules(module: str, args: list[str]) -> tuple[list[str], str]:
    code = PROBE.format(module=module, args=args)
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    line = [x for x in out.splitlines() if x.startswith("HEAVY")][-1]
    return [m for m in line.removeprefix("HEAVY").strip().split(",") if m], out


@pytest.mark.parametrize("module", ["sim.cli", "recon.cli"])
def test_help_imports_neither_torch_nor_numpy(module: str) -> None:
    heavy, out = _heavy_modules(module, ["--help"])
    assert heavy == [], heavy
    assert "Usage" in out


@pytest.mark.parametrize(
    ("module", "command"),
    [("sim.cli", "generate"), ("sim.cli", "bench"), ("recon.cli", "predict"),
     ("recon.cli", "calibrate"), ("recon.cli", "train")],
)  # fmt: skip
def test_command_help_imports_no_torch(module: str, command: str) -> None:
    heavy, out = _heavy_modules(module, [command, "--help"])
    assert "torch" not in heavy, heavy
    assert "Usage" in out
