"""`recon loop`: closed-loop correction with any estimator; closed-loop capture range."""

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

__all__ = ["loop_command"]


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
    refine: RefineOpt = None,
    calibration: CalibrationOpt = None,
    photons: PhotonsOpt = None,
    read_noise: ReadNoiseOpt = None,
    warm: Annotated[
        bool, typer.Option("--warm", help="track a drifting aberration frame by frame")
    ] = False,
    frames: Annotated[int, typer.Option("--frames", min=4, help="--warm: frames")] = 50,
    drift: Annotated[
        float, typer.Option("--drift", min=0, help="--warm: OPD change per frame [nm RMS]")
    ] = 10.0,
    start_rms: Annotated[
        float, typer.Option("--start-rms", min=0, help="--warm: first frame's OPD [nm RMS]")
    ] = 50.0,
    steps: Annotated[
        int, typer.Option("--steps", min=1, help="--warm: Gauss-Newton steps per frame")
    ] = 4,  # recon.refine.tracker.DEFAULT_STEPS (not imported: --help stays torch-free)
    refresh: Annotated[
        int,
        typer.Option(
            "--refresh", min=1, help="--warm: frames between Jacobians (BFGS updates between)"
        ),
    ] = 20,  # recon.refine.tracker.DEFAULT_REFRESH
    seed: Annotated[int, typer.Option("--seed", help="--warm: the drift's seed")] = 0,
) -> None:
    """Closed loop: correct by gain x estimate, re-simulate, repeat; closed-loop capture range.

    --photons and --read-noise: simulate (and fit) the frames at this noise [the file's].
    --warm: the frame-rate tracker (warm-started modal refinement, batch 1) on a random
    walk of the dataset system's modes; per-frame latency [ms] and error against the
    Cramer-Rao bound [nm].
    """
    from recon.estimators import list_baselines
    from recon.evaluation import closed_loop, default_out_dir, write_loop_report

    check_data(data)
    if (source is None) == (baseline is None):
        raise UserError("give one of: a checkpoint or run folder, or --baseline NAME")
    if source is not None and not Path(source).exists() and source.lower() in list_baselines():
        source, baseline = None, source
    ests = build_estimators(
        [source] if source else [], [baseline] if baseline else [], data, wavelength, device
    )
    if calibration is not None and not refine:
        raise UserError("--calibration needs --refine (the calibrated system refines estimates)")
    detector = detector_overrides(photons, read_noise)
    if warm:
        if refine not in (None, "modal"):
            raise UserError("--warm tracks with modal refinement (--refine modal)")
        (refined,) = add_refined(
            ests, data, "modal", device, zero_start=False, only=True, calibration=calibration,
            detector=detector,
        ).values()  # fmt: skip
        _warm(refined, data, detector, out, frames, drift, start_rms, steps, refresh, seed)
        return
    if refine:
        ests = add_refined(
            ests, data, refine, device, zero_start=False, only=True, calibration=calibration,
            detector=detector,
        )  # fmt: skip
    (est,) = ests.values()
    n = count_samples(data, max_samples)
    try:
        with progress_bar(n, "closed loop") as advance:
            report = closed_loop(
                est, data, iterations, gain, batch_size, max_samples, device,
                progress=advance, detector=detector,
            )  # fmt: skip
    except ValueError as err:
        raise UserError(str(err).splitlines()[0]) from None
    paths = write_loop_report(report, out or default_out_dir("loop"))
    meds = ", ".join(f"{m:.1f}" for m in report["median_by_iteration_nm"])
    console.print(f"{report['estimator']}: median residual RMS by iteration (nm): {meds}")
    largest = report["largest_passing_nm"]
    console.print(
        f"closed-loop capture range: {report['capture_range_nm']:.0f} nm (largest passing bin "
        + ("edge: none, no bin passes)" if largest is None else f"edge {largest:.0f} nm)")
    )
    console.print(f"report: {paths['json'].parent}/ (loop.json, loop.md, loop.png)")


def _warm(refined, data, detector, out, frames, drift, start_rms, steps, refresh, seed) -> None:
    """`recon loop --warm`: run `warm_loop`, write and print its report."""
    from recon.evaluation import default_out_dir, open_test_set
    from recon.evaluation.warm_loop import warm_loop, write_warm_report

    with open_test_set(data) as ts:
        cfg = ts.sim_config().with_overrides(**(detector or {}))
    try:
        with progress_bar(frames, "warm loop") as advance:
            report = warm_loop(
                refined, cfg, frames, drift, start_rms, steps, refresh, seed, progress=advance
            )
    except ValueError as err:
        raise UserError(str(err).splitlines()[0]) from None
    paths = write_warm_report(report, out or default_out_dir("warm-loop"))
    s = report["summary"]
    console.print(
        f"{report['estimator']}: latency {s['latency_median_ms']:.2f} ms median, "
        f"{s['latency_p95_ms']:.2f} ms p95 (first frame {s['first_frame_ms']:.0f} ms); "
        f"error/CRB after {s['settle_frames']} frames {s['ratio_median']:.2f} median, "
        f"{s['ratio_max']:.2f} max ({s['error_median_nm']:.3f} nm against "
        f"{s['crb_median_nm']:.3f} nm); {s['reseeds']} reseeds"
    )
    console.print(f"report: {paths['json'].parent}/ (warm_loop.json, .md, .png)")
