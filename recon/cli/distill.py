"""`recon distill`: a small student from a trained teacher, then teacher vs student.

Heavy imports (torch, Lightning) happen inside the command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from common.cli import console
from common.io import write_json_atomic
from recon.cli.train import build_config

__all__ = ["compare_teacher_student", "distill_command", "print_comparison"]

SUMMARY_FILE = "distill_summary.json"


def compare_teacher_student(run_dir: Path, repeats: int = 20) -> list[dict[str, Any]]:
    """Params, GFLOPs, CPU latency (1 frame) and validation residual of teacher and student.

    The student is the run's ``checkpoints/best.ckpt``; the validation set is the run's
    (its ``config.yaml`` gives the same file or seeded split). Residual: RMS [nm] of
    estimate - truth over the pupil, piston removed, per sample; median and mean.
    """
    import numpy as np
    import torch
    import yaml
    from torch.utils.data import DataLoader

    from data.schema import pupil_mask
    from recon.evaluation.metrics import residual_rms_nm
    from recon.models import load_checkpoint
    from recon.nn.complexity import count_flops, count_parameters, measure_latency
    from recon.train import load_data, load_train_config

    data = load_data(load_train_config(run_dir / "config.yaml"))
    teacher = yaml.safe_load((run_dir / "distill.yaml").read_text())["teacher"]
    mask = pupil_mask(data.source.pupil.numpy())
    shape = (1, len(data.source.wavelengths_m), data.source.npix, data.source.npix)
    rows = []
    for role, path in (("teacher", teacher), ("student", run_dir / "checkpoints" / "best.ckpt")):
        model, meta = load_checkpoint(path)
        residuals = []
        with torch.no_grad():
            for batch in DataLoader(data.val, batch_size=64):
                pred = model(batch[0])  # (B, L, H, W) -> (B, 1, H, W) [nm]
                residuals.append(residual_rms_nm(batch[1][:, 0], pred[:, 0], mask))
        res = np.concatenate(residuals)
        rows.append(
            {
                "model": role,
                "arch": meta["arch"],
                "checkpoint": str(path),
                "params": count_parameters(model),
                "gflops": count_flops(model, shape) / 1e9,
                "latency_ms": measure_latency(model, shape, repeats=repeats),
                "cpu_threads": torch.get_num_threads(),
                "val_residual_rms_nm_median": float(np.median(res)),
                "val_residual_rms_nm_mean": float(res.mean()),
                "val_samples": int(res.size),
                "input_shape": list(shape),
            }
        )
    return rows


def print_comparison(rows: list[dict[str, Any]]) -> None:
    """Teacher vs student table on the console."""
    from rich.table import Table

    shape = tuple(rows[0]["input_shape"])
    threads = rows[0]["cpu_threads"]
    table = Table(
        title=f"teacher vs student: input {shape}, CPU ({threads} threads); val residual RMS "
        "over the pupil, piston removed, per sample"
    )
    table.add_column("model")
    table.add_column("arch")
    table.add_column("params", justify="right")
    table.add_column("GFLOPs", justify="right")
    table.add_column("latency (ms)", justify="right")
    table.add_column("val RMS median (nm)", justify="right")
    table.add_column("val RMS mean (nm)", justify="right")
    for r in rows:
        table.add_row(
            r["model"],
            r["arch"],
            f"{r['params']:,}",
            f"{r['gflops']:.4f}",
            f"{r['latency_ms']:.2f}",
            f"{r['val_residual_rms_nm_median']:.1f}",
            f"{r['val_residual_rms_nm_mean']:.1f}",
        )
    console.print(table)


def distill_command(
    teacher: Annotated[Path, typer.Option(help="teacher run folder (its best.ckpt) or .ckpt")],
    arch: Annotated[str, typer.Option(help="student: a registered model, e.g. phenn")],
    config: Annotated[
        str | None,
        typer.Option("--config", "-c", help="student config: configs/recon/ name or YAML path"),
    ] = None,
    data: Annotated[Path | None, typer.Option(help="training file [datasets/train.h5]")] = None,
    val: Annotated[
        Path | None, typer.Option(help="validation file [val.h5 beside --data; else 10% split]")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="maximum epochs")] = None,
    batch_size: Annotated[int | None, typer.Option(help="samples per batch per device")] = None,
    lr: Annotated[float | None, typer.Option(help="peak learning rate")] = None,
    w_response: Annotated[
        float, typer.Option(help="weight of the response term (OPD / opd_scale MSE)")
    ] = 1.0,
    w_feature: Annotated[
        float, typer.Option(help="weight of the normalised feature term (deepest features)")
    ] = 0.1,
    seed: Annotated[int | None, typer.Option(help="random seed")] = None,
    out: Annotated[Path | None, typer.Option(help="parent folder of run folders [runs]")] = None,
    progress: Annotated[bool, typer.Option(help="show the progress bar")] = True,
) -> None:
    """Train a small student reconstructor from a trained teacher (response + feature KD)."""
    import recon.models  # noqa: F401  (register phenn and gru)
    from recon.nn import get_model
    from recon.train.data import missing_dataset_message
    from recon.train.distill import distill, teacher_checkpoint

    get_model(arch)  # one line that lists the known models
    ckpt = teacher_checkpoint(teacher)

    cfg = build_config(
        config=config,
        arch=arch,
        data=data,
        val=val,
        resume=None,
        **{
            "epochs": epochs,
            "batch_size": batch_size,
            "optim.lr": lr,
            "seed": seed,
            "out_dir": str(out) if out is not None else None,
        },
    )
    if not cfg.data.train.is_file():
        raise FileNotFoundError(missing_dataset_message(cfg.data.train))
    from recon.train.quiet import quiet_lightning

    quiet_lightning()
    run_dir = distill(ckpt, cfg, w_response, w_feature, enable_progress_bar=progress)
    console.print(f"run folder: {run_dir}")
    rows = compare_teacher_student(run_dir)
    print_comparison(rows)
    write_json_atomic(run_dir / SUMMARY_FILE, {"results": rows})
