"""`recon eval` and `recon loop`: registered on `recon.cli.app` when this module is imported."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from recon.cli import app
from sim.cliutil import UserError, console, one_line_errors

__all__ = ["build_estimators", "eval_command", "loop_command"]

DataOpt = Annotated[Path, typer.Option("--data", help="test dataset file (sim generate)")]
WavelengthOpt = Annotated[
    float | None,
    typer.Option("--wavelength", help="wavelength of the baselines [um] (default 1.0)"),
]
OutOpt = Annotated[Path | None, typer.Option("--out", help="report folder [reports/<kind>-<time>]")]
MaxOpt = Annotated[int | None, typer.Option("--max-samples", min=1, help="first N samples only")]
BatchOpt = Annotated[int, typer.Option("--batch-size", min=1, help="samples per batch")]
DeviceOpt = Annotated[str, typer.Option("--device", help="torch device of networks and engine")]


def _check_data(data: Path) -> None:
    if not data.exists():
        raise UserError(
            f"no dataset at {data}; make one with: sim generate --config quick --split test "
            f"--n 3000 --out {data}"
        )


def _count(data: Path, max_samples: int | None) -> int:
    """Samples to run: the file's count, capped by --max-samples (checks the file)."""
    from recon.evaluate import read_test_set

    ts = read_test_set(data)
    ts["file"].close()
    return min(ts["n"], max_samples) if max_samples else ts["n"]


def build_estimators(
    sources: list[str],
    baselines: list[str],
    data: Path,
    wavelength_um: float | None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Label -> estimator for checkpoints / run folders and baseline names (one-line errors)."""
    from recon.estimator import NetworkEstimator, create_baseline

    out: dict[str, Any] = {}
    try:
        for name in baselines:
            est = create_baseline(name, data, wavelength_um=wavelength_um)
            out[est.name] = est
        for src in sources:
            est = NetworkEstimator.from_checkpoint(src, device=device)
            label, k = est.name, 2
            while label in out:
                label, k = f"{est.name}#{k}", k + 1
            est.name = label
            out[label] = est
    except ValueError as err:  # unknown names, wavelengths, bad checkpoints
        raise UserError(str(err).splitlines()[0]) from None
    if not out:
        raise UserError("give a checkpoint or run folder, or --baseline analytic")
    return out


def _progress(total: int, label: str):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    bar = Progress(
        label,
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    task = bar.add_task(label, total=total)
    return bar, lambda k: bar.advance(task, k)


@app.command("eval")
@one_line_errors
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
) -> None:
    """Evaluate reconstructors on a test set: JSON, Markdown and PNG report, capture ranges."""
    from recon.evaluate import default_out_dir, evaluate, write_report

    _check_data(data)
    total = _count(data, max_samples)  # one-line error for a bad file, before any model
    estimators = build_estimators(sources or [], baseline or [], data, wavelength, device)
    bar, advance = _progress(total, "evaluating")
    try:
        with bar:
            report = evaluate(estimators, data, batch_size, max_samples, progress=advance)
    except ValueError as err:
        raise UserError(str(err).splitlines()[0]) from None
    folder = out or default_out_dir("eval")
    paths = write_report(report, folder)
    from rich.table import Table

    table = Table(title=f"{report['data']['n_samples']} samples of {data}")
    for col in (
        "estimator",
        "wavelengths (um)",
        "capture range (nm)",
        "crossing (nm)",
        "ratio to analytic",
        "median residual (nm)",
        "median Pearson",
    ):
        table.add_column(col, justify="left" if col == "estimator" else "right")
    for name, e in report["estimators"].items():
        s, ratio, cross = e["summary"], e["ratio_to_analytic"], e["crossing_nm"]
        table.add_row(
            name,
            ", ".join(f"{w:g}" for w in e["wavelengths_um"]),
            f"{e['capture_range_nm']:.0f}",
            "-" if cross is None else f"{cross:.1f}",
            "-" if ratio is None else f"{ratio:.2f}",
            f"{s['median_residual_nm']:.2f}",
            f"{s['median_pearson']:.4f}",
        )
    console.print(table)
    console.print(f"report: {paths['json'].parent}/ (report.json, report.md, *.png)")


@app.command("loop")
@one_line_errors
def loop_command(
    source: Annotated[
        str | None, typer.Argument(help="checkpoint, run folder or baseline name")
    ] = None,
    data: DataOpt = Path("datasets/test.h5"),
    baseline: Annotated[str | None, typer.Option("--baseline", help="baseline name")] = None,
    iterations: Annotated[int, typer.Option("--iterations", min=1, help="loop steps")] = 5,
    gain: Annotated[float, typer.Option("--gain", help="loop gain, (0, 2]")] = 1.0,
    wavelength: WavelengthOpt = None,
    out: OutOpt = None,
    max_samples: MaxOpt = None,
    batch_size: BatchOpt = 32,
    device: DeviceOpt = "cpu",
) -> None:
    """Closed loop: correct by gain x estimate, re-simulate, repeat; closed-loop capture range."""
    from recon.estimator import list_baselines
    from recon.evaluate import default_out_dir
    from recon.loop import closed_loop, write_loop_report

    _check_data(data)
    if (source is None) == (baseline is None):
        raise UserError("give one of: a checkpoint or run folder, or --baseline NAME")
    if source is not None and not Path(source).exists() and source.lower() in list_baselines():
        source, baseline = None, source
    ests = build_estimators(
        [source] if source else [], [baseline] if baseline else [], data, wavelength, device
    )
    (est,) = ests.values()
    n = _count(data, max_samples)
    bar, advance = _progress(n, "closed loop")
    try:
        with bar:
            report = closed_loop(
                est, data, iterations, gain, batch_size, max_samples, device, progress=advance
            )
    except ValueError as err:
        raise UserError(str(err).splitlines()[0]) from None
    paths = write_loop_report(report, out or default_out_dir("loop"))
    meds = ", ".join(f"{m:.1f}" for m in report["median_by_iteration_nm"])
    console.print(f"{report['estimator']}: median residual RMS by iteration (nm): {meds}")
    console.print(
        f"closed-loop capture range: {report['capture_range_nm']:.0f} nm "
        f"(largest passing bin edge {report['largest_passing_nm']})"
    )
    console.print(f"report: {paths['json'].parent}/ (loop.json, loop.md, loop.png)")
