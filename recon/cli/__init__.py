"""`recon` command line, assembled here from one plain function per command module.

No command module imports this package back: each defines a function, and this file
registers it with the one error path (`common.cli.one_line_errors`).
"""

from __future__ import annotations

import typer

from common.cli import OneLineErrorGroup, one_line_errors
from recon.cli.bench import bench_command, bench_refine_command
from recon.cli.calibrate import calibrate_command
from recon.cli.digits import digits_command
from recon.cli.distill import distill_command
from recon.cli.evaluate import eval_command
from recon.cli.export import export_command
from recon.cli.info import info_command
from recon.cli.loop import loop_command
from recon.cli.predict import predict_command
from recon.cli.train import train_command

__all__ = ["app"]

app = typer.Typer(
    cls=OneLineErrorGroup,
    help="Reconstruct wavefronts from ZWFS intensities.",
    no_args_is_help=True,
    add_completion=False,
)

_COMMANDS = {
    "train": train_command,
    "eval": eval_command,
    "loop": loop_command,
    "calibrate": calibrate_command,
    "predict": predict_command,
    "export": export_command,
    "distill": distill_command,
    "bench": bench_command,
    "bench-refine": bench_refine_command,
    "info": info_command,
    "digits": digits_command,
}
for _name, _command in _COMMANDS.items():
    app.command(_name)(one_line_errors(_command))


@app.callback()
def main() -> None:
    """Reconstruct wavefronts from ZWFS intensities."""
