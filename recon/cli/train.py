"""`recon train`: the training config from a YAML file and the flags, then a run.

Heavy imports (torch, Lightning) happen inside the command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from common.cli import UserError, console

__all__ = ["build_config", "floats", "resume_folder", "train_command"]

DEFAULT_TRAIN = Path("datasets/train.h5")
RESUMABLE = (
    "epochs",
    "budget_s",
    "devices",
    "accelerator",
    "num_nodes",
    "compile",
    "data.placement",
)  # may change on --resume


def floats(text: str, name: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{name} must be comma-separated numbers, got {text!r}") from None


def duration_s(text: str, name: str) -> float:
    """Seconds from ``90``, ``90s``, ``12m`` or ``1.5h``."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    value, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    try:
        seconds = float(value) * units[unit]
    except ValueError:
        raise UserError(
            f"{name} must be a duration such as 90s, 12m or 1.5h, got {text!r}"
        ) from None
    if not seconds > 0:
        raise UserError(f"{name} must be positive, got {text!r}")
    return seconds


def resume_folder(path: Path) -> Path:
    """The run folder to resume: `path` itself, or the one run folder inside an `--out` parent.

    A parent with two or more run folders is a one-line error that lists them.
    """
    path = Path(path)
    if (path / "config.yaml").is_file() or not path.is_dir():
        return path
    runs = sorted(p for p in path.iterdir() if (p / "config.yaml").is_file())
    if len(runs) > 1:
        names = ", ".join(p.name for p in runs)
        raise UserError(
            f"--resume {path} holds {len(runs)} run folders ({names}); name one of them"
        )
    if runs:
        console.print(f"--resume: {path} holds one run folder; continuing {runs[0]}")
        return runs[0]
    return path


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
    from recon.train import load_train_config

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


def train_command(
    arch: Annotated[str | None, typer.Option(help="registered model: phenn, gru, ...")] = None,
    data: Annotated[Path | None, typer.Option(help="training file [datasets/train.h5]")] = None,
    val: Annotated[
        Path | None, typer.Option(help="validation file [val.h5 beside --data; else 10% split]")
    ] = None,
    config: Annotated[
        str | None,
        typer.Option(
            "--config", "-c", help="packaged config name (phenn, gru, quick) or YAML path"
        ),
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
    precision: Annotated[
        str | None, typer.Option(help="auto | 32 | bf16-mixed | 16-mixed [auto: bf16 on a GPU]")
    ] = None,
    compile_model: Annotated[
        bool | None,
        typer.Option("--compile/--no-compile", help="torch.compile the network [on with CUDA]"),
    ] = None,
    placement: Annotated[
        str | None,
        typer.Option(help="auto | device | pinned | loader: where the training set is held"),
    ] = None,
    online: Annotated[
        bool | None,
        typer.Option(
            "--online/--offline", help="simulate every batch on the device (no dataset file)"
        ),
    ] = None,
    sim_config: Annotated[
        str | None, typer.Option(help="--online: the simulated system, name or YAML [paper]")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="random seed")] = None,
    resume: Annotated[
        Path | None,
        typer.Option(help="run folder to continue from its last.ckpt (or the --out that holds it)"),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="parent folder of run folders [runs]")] = None,
    ema: Annotated[float | None, typer.Option(help="EMA decay of the weights, e.g. 0.999")] = None,
    budget: Annotated[
        str | None,
        typer.Option(help="wall-time budget, e.g. 5m: stop when spent; the LR follows it"),
    ] = None,
    progress: Annotated[bool, typer.Option(help="show the progress bar")] = True,
) -> None:
    """Train a network that maps ZWFS intensities to the OPD map [nm]."""
    from recon.train import train
    from recon.train.data import missing_dataset_message

    resume = resume_folder(resume) if resume is not None else None
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
            "data.wavelengths_um": floats(wavelengths, "--wavelengths") if wavelengths else None,
            "devices": _devices(devices),
            "accelerator": accelerator,
            "num_nodes": num_nodes,
            "precision": precision,
            "compile": compile_model,
            "data.placement": placement,
            "online": online,
            "data.sim_config": sim_config,
            "seed": seed,
            "out_dir": str(out) if out is not None else None,
            "ema_decay": ema,
            "budget_s": duration_s(budget, "--budget") if budget else None,
        },
    )
    if resume is None and not cfg.online and not cfg.data.train.is_file():
        raise FileNotFoundError(missing_dataset_message(cfg.data.train))
    from recon.train.quiet import quiet_lightning

    quiet_lightning()
    source = "simulated batches (--online)" if cfg.online else str(cfg.data.train)
    verb = f"resuming {resume}:" if resume is not None else "training"
    console.print(f"{verb} {cfg.arch} on {source}, up to {cfg.epochs} epochs")
    run_dir = train(cfg, resume=resume, enable_progress_bar=progress)
    console.print(f"run folder: {run_dir}")
    _print_hardware(run_dir)


def _print_hardware(run_dir: Path) -> None:
    """One line: the precision the run trained in, and whether its steps ran compiled."""
    import json

    path = run_dir / "hardware.json"
    if not path.is_file():
        return
    record = json.loads(path.read_text())
    status = record.get("compile_status", {})
    if not status.get("requested"):
        ran = "eager"
    elif status.get("fallback"):
        ran = f"eager after torch.compile failed ({status['fallback']})"
    else:
        ran = f"compiled ({status.get('graphs', 0)} graphs)"
    console.print(f"hardware: {record.get('device')} plan, {record.get('precision')}, {ran}")
