"""`recon train` and `recon bench`, registered on the `recon` Typer app.

`recon/cli.py` imports this module (``import recon.cli_train``) so that the commands
exist; heavy imports (torch, Lightning) happen inside the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recon.cli import app
from sim.cliutil import UserError, console, one_line_errors, write_json_atomic

__all__ = ["bench_command", "build_config", "train_command"]

DEFAULT_TRAIN = Path("datasets/train.h5")
RESUMABLE = ("epochs", "devices", "accelerator", "num_nodes")  # may change on --resume


def _floats(text: str, name: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{name} must be comma-separated numbers, got {text!r}") from None


def _devices(text: str | None) -> int | str | None:
    if text is None or text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise UserError(f"--devices must be an integer or 'auto', got {text!r}") from None


def build_config(
    *,
    config: str | None,
    arch: str | None,
    data: Path | None,
    val: Path | None,
    resume: Path | None,
    **flags: object,
):  # -> TrainConfig (imported lazily)
    """The training config from a YAML file (or the run's, on resume) and the flags.

    flags: dotted TrainConfig field names -> values (None: not given).
    """
    from recon.config import load_train_config

    if resume is not None:
        changed = [k for k, v in flags.items() if v is not None and k not in RESUMABLE]
        changed += [
            n
            for n, v in (("--config", config), ("--arch", arch), ("--data", data), ("--val", val))
            if v is not None
        ]
        if changed:
            raise UserError(
                f"{', '.join(changed)} cannot change when resuming: the run's config.yaml "
                f"fixes them (only {', '.join(RESUMABLE)} may change); start a new run instead"
            )
        run_cfg = Path(resume) / "config.yaml"
        if not run_cfg.is_file():
            raise FileNotFoundError(f"{resume} is not a run folder (no config.yaml)")
        return load_train_config(run_cfg).with_overrides(**flags)
    name = config or (arch if arch in ("phenn", "gru") else "phenn")
    cfg = load_train_config(name)
    overrides: dict[str, object] = dict(flags)
    overrides["arch"] = arch
    if data is not None:
        overrides["data.train"] = str(data)
        # a validation file next to the given training file (else a split of it)
        overrides["data.val"] = str(val if val is not None else data.parent / "val.h5")
    elif val is not None:
        overrides["data.val"] = str(val)
    return cfg.with_overrides(**overrides)


@app.command("train")
@one_line_errors
def train_command(
    arch: Annotated[str | None, typer.Option(help="registered model: phenn, gru, ...")] = None,
    data: Annotated[Path | None, typer.Option(help="training file [datasets/train.h5]")] = None,
    val: Annotated[
        Path | None, typer.Option(help="validation file [val.h5 beside --data; else 10% split]")
    ] = None,
    config: Annotated[
        str | None, typer.Option("--config", "-c", help="configs/recon/ name or YAML path")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="maximum epochs")] = None,
    batch_size: Annotated[int | None, typer.Option(help="samples per batch per device")] = None,
    lr: Annotated[float | None, typer.Option(help="peak learning rate")] = None,
    wavelengths: Annotated[
        str | None, typer.Option(help="subset to train on, um, comma-separated (e.g. 1.0)")
    ] = None,
    devices: Annotated[str | None, typer.Option(help="devices per node: N or auto")] = None,
    accelerator: Annotated[str | None, typer.Option(help="auto | cpu | gpu")] = None,
    num_nodes: Annotated[int | None, typer.Option(help="nodes (multi-node DDP / SLURM)")] = None,
    precision: Annotated[str | None, typer.Option(help="32 | bf16-mixed | 16-mixed")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed")] = None,
    resume: Annotated[
        Path | None, typer.Option(help="run folder to continue from its last.ckpt")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="parent folder of run folders [runs]")] = None,
    ema: Annotated[float | None, typer.Option(help="EMA decay of the weights, e.g. 0.999")] = None,
    progress: Annotated[bool, typer.Option(help="show the progress bar")] = True,
) -> None:
    """Train a network that maps ZWFS intensities to the OPD map [nm]."""
    from recon.lit import NonFiniteLossError
    from recon.train import train

    cfg = build_config(
        config=config,
        arch=arch,
        data=data,
        val=val,
        resume=resume,
        **{
            "epochs": epochs,
            "batch_size": batch_size,
            "optim.lr": lr,
            "data.wavelengths_um": _floats(wavelengths, "--wavelengths") if wavelengths else None,
            "devices": _devices(devices),
            "accelerator": accelerator,
            "num_nodes": num_nodes,
            "precision": precision,
            "seed": seed,
            "out_dir": str(out) if out is not None else None,
            "ema_decay": ema,
        },
    )
    if resume is None and not cfg.data.train.is_file():
        raise FileNotFoundError(
            f"training dataset {cfg.data.train} not found; make it with: "
            f"sim generate --n 8000 --split train --out {cfg.data.train}"
        )
    try:
        run_dir = train(cfg, resume=resume, enable_progress_bar=progress)
    except NonFiniteLossError as err:
        raise UserError(str(err)) from None
    console.print(f"run folder: {run_dir}")


@app.command("bench")
@one_line_errors
def bench_command(
    arch: Annotated[str, typer.Option(help="comma-separated architectures")] = "phenn,gru",
    sizes: Annotated[str, typer.Option(help="comma-separated samplings [px]")] = "64,128",
    config: Annotated[
        str | None, typer.Option(help="config for the widths [each arch's own]")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="training batch size")] = 16,
    steps: Annotated[int, typer.Option(help="timed training steps")] = 3,
    repeats: Annotated[int, typer.Option(help="timed inference passes")] = 10,
    device: Annotated[
        str | None, typer.Option(help="cpu | cuda [cpu, and cuda if present]")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="JSON [bench/recon_bench.json]")] = None,
) -> None:
    """Training samples/s and single-frame latency of phenn and gru at 64 and 128 px."""
    from recon.bench import default_json_path, print_table, run_bench

    rows = run_bench(
        archs=[a.strip() for a in arch.split(",") if a.strip()],
        sizes=[int(s) for s in _floats(sizes, "--sizes")],
        config=config,
        batch_size=batch_size,
        steps=steps,
        repeats=repeats,
        devices=None if device is None else [device],
    )
    print_table(rows)
    path = write_json_atomic(out or default_json_path(), {"results": rows})
    console.print(f"JSON: {path}")
