"""`recon eval`: reconstructors side by side on one test set; JSON, Markdown and plots."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from common.cli import UserError, console, progress_bar
from recon.cli.options import (
    BatchOpt,
    CalibrationOpt,
    DataOpt,
    DeviceOpt,
    MaxOpt,
    NameOpt,
    OutOpt,
    PhotonsOpt,
    ReadNoiseOpt,
    RefineOpt,
    WavelengthOpt,
    add_refined,
    build_estimators,
    check_data,
    count_samples,
    detector_overrides,
)

__all__ = ["eval_command"]


def eval_command(
    sources: Annotated[
        list[str] | None, typer.Argument(help="checkpoints or run folders (side by side)")
    ] = None,
    data: DataOpt = Path("datasets/test.h5"),
    baseline: Annotated[
        list[str] | None, typer.Option("--baseline", help="baseline name, e.g. analytic")
    ] = None,
    wavelength: WavelengthOpt = None,
    out: OutOpt = None,
    max_samples: MaxOpt = None,
    batch_size: BatchOpt = 64,
    device: DeviceOpt = "cpu",
    name: NameOpt = None,
    refine: RefineOpt = None,
    calibration: CalibrationOpt = None,
    zero_start: Annotated[
        bool,
        typer.Option(help="with --refine: also refine from a flat start (the fit's own range)"),
    ] = True,
    photons: PhotonsOpt = None,
    read_noise: ReadNoiseOpt = None,
) -> None:
    """Evaluate reconstructors on a test set: JSON, Markdown and PNG report, capture ranges.

    --photons and --read-noise: the noise the refinement assumes (default: the file's).
    """
    from recon.evaluation import default_out_dir, evaluate, write_report

    check_data(data)
    total = count_samples(data, max_samples)  # one-line error for a bad file, before any model
    estimators = build_estimators(sources or [], baseline or [], data, wavelength, device, name)
    reference = next(iter(estimators)) if baseline else None  # the first --baseline
    if calibration is not None and not refine:
        raise UserError("--calibration needs --refine (the calibrated system refines estimates)")
    detector = detector_overrides(photons, read_noise)
    if detector and not refine:
        raise UserError("--photons and --read-noise need --refine (they set the fit's weights)")
    if refine:
        estimators = add_refined(
            estimators, data, refine, device, zero_start=zero_start, calibration=calibration,
            detector=detector,
        )  # fmt: skip
    try:
        with progress_bar(total, "evaluating") as advance:
            report = evaluate(
                estimators, data, batch_size, max_samples, progress=advance, reference=reference
            )
    except ValueError as err:
        raise UserError(str(err).splitlines()[0]) from None
    folder = out or default_out_dir("eval")
    paths = write_report(report, folder)
    from rich.table import Table

    table = Table(title=f"{report['data']['n_samples']} samples of {data}")
    for col in ("estimator", "capture", "strict", "cross", "ratio", "median", "Pearson"):
        table.add_column(col, justify="left" if col == "estimator" else "right")
    for name, e in report["estimators"].items():
        s, ratio, cross = e["summary"], e["ratio_to_analytic"], e["crossing_nm"]
        table.add_row(
            name,
            f"{e['capture_range_nm']:.0f}",
            f"{e['capture_range_strict_nm']:.0f}",
            "-" if cross is None else f"{cross:.0f}",
            "-" if ratio is None else f"{ratio:.2f}x",
            f"{s['median_residual_nm']:.3g}",
            f"{s['median_pearson']:.4f}",
        )
    console.print(table)
    console.print(
        "capture, strict, cross: capture ranges and the crossing RMS (nm); ratio: capture "
        "range / the first baseline's; median: residual RMS (nm); Pearson: median"
    )
    console.print(f"report: {paths['json'].parent}/ (report.json, report.md, *.png)")
