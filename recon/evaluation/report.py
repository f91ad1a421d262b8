"""Report writers of `recon eval` and `recon loop`: JSON, Markdown tables and PNG plots.

    paths = write_report(evaluate(...), "reports/eval-20250101-120000")
    paths = write_loop_report(closed_loop(...), "reports/loop-20250101-120000")

The plots are the paper's: example true / estimated / residual maps; Pearson and
residual RMS versus true RMS, every estimator on the same axes; for the loop, the
median residual per iteration and bin. Bins come from `recon.evaluation.metrics`.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from common.io import write_json_atomic, write_text_atomic
from recon.evaluation.metrics import bin_masks
from recon.refine.solver import STATUSES

__all__ = ["jsonable", "load_report", "write_loop_report", "write_report"]


def _pyplot() -> Any:
    """matplotlib's pyplot on the non-interactive Agg backend (imported on first use)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def jsonable(obj: Any) -> Any:
    """Plain JSON values: numpy to Python, NaN/inf to None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _markdown(report: dict[str, Any]) -> str:
    d = report["data"]
    lines = [
        "# ZWFS reconstruction: evaluation",
        "",
        f"Data: `{d['path']}` ({d['n_samples']} samples, {d['npix']} px, split {d['split']}, "
        f"wavelengths {d['wavelengths_um']} um). Created {report['created']}.",
        "",
        "Capture range: 25 nm bins of true RMS; a bin passes when its median residual RMS "
        "(piston removed) is at most max(0.2 x bin centre, 10 nm); the range is the upper "
        "edge of the unbroken passing run from the 25-50 nm bin (0-25 nm not judged). "
        "Strict capture range: the same with max(0.05 x bin centre, 2 nm).",
        "",
        "| estimator | wavelengths (um) | capture range (nm) | strict (nm) | crossing (nm) | "
        "ratio to analytic | median residual (nm) | median Pearson | ms/sample |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    fmt = lambda v, p=1: "-" if v is None else f"{v:.{p}f}"  # noqa: E731
    for name, e in report["estimators"].items():
        s = e["summary"]
        lines.append(
            f"| {name} | {', '.join(f'{w:g}' for w in e['wavelengths_um'])} | "
            f"{e['capture_range_nm']:.0f} | {e['capture_range_strict_nm']:.0f} | "
            f"{fmt(e['crossing_nm'])} | "
            f"{fmt(e['ratio_to_analytic'], 2)} | {s['median_residual_nm']:.2f} | "
            f"{fmt(s['median_pearson'], 4)} | {s['ms_per_sample']:.2f} |"
        )
    refined = {k: e["summary"] for k, e in report["estimators"].items()
               if "good_fit_fraction" in e["summary"]}  # fmt: skip
    if refined:
        lines += [
            "",
            "Refinement, samples per status (converged, stalled, iteration limit; poor: above "
            "the noise; mismatch: above it from two starts alike, the model's misfit), "
            "restarted from the rotated and mirrored frames, median iterations:",
            "",
            "| estimator | conv. | stalled | limit | poor | mismatch | restarted | iter. |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for k, s in refined.items():
            counts = s.get("fit_status_counts", {})
            cells = " | ".join(str(counts.get(name, "-")) for name in STATUSES)
            lines.append(
                f"| {k} | {cells} | {100 * s['restarted_fraction']:.1f} % | "
                f"{s['median_iterations']:.0f} |"
            )
    names = list(report["estimators"])
    crb = report.get("crb")
    crb_bins = [b["median_crb_nm"] for b in crb["bins"]] if crb else None
    lines += [
        "",
        "Median residual RMS (nm) per true-RMS bin (pass / FAIL / not judged):",
        "",
        "| bin (nm) | n | threshold (nm) | "
        + " | ".join(names)
        + (" | CRB (nm) |" if crb else " |"),
        "| --- | ---: | ---: | "
        + " | ".join("---:" for _ in names)
        + (" | ---: |" if crb else " |"),
    ]
    tables = [report["estimators"][k]["capture_range"]["bins"] for k in names]
    for k, rows in enumerate(zip(*tables, strict=True)):
        r0 = rows[0]
        cells = []
        for r in rows:
            tag = "" if not r["judged"] else (" pass" if r["passed"] else " FAIL")
            cells.append(f"{fmt(r['median_residual_nm'])}{tag}")
        lines.append(
            f"| {r0['lo_nm']:.0f}-{r0['hi_nm']:.0f} | {r0['count']} | "
            f"{r0['threshold_nm']:.1f} | "
            + " | ".join(cells)
            + (f" | {fmt(crb_bins[k], 2)} |" if crb_bins else " |")
        )
    lines += _piston_markdown(report)
    if crb:
        lines += [
            "",
            f"CRB: Cramer-Rao bound of the OPD RMS error of {_crb_modes(crb)} "
            f"coefficients (median per bin) at {crb['photons']:.3g} photons "
            f"per frame in the clear pupil and {crb['read_noise_e']:g} e- read noise "
            "(`recon.evaluation.crb`).",
        ]
    return "\n".join(lines) + "\n"


def _crb_modes(crb: dict[str, Any]) -> str:
    """The fitted modes the bound is for, in words."""
    labels = crb.get("basis") or [f"Noll {j}" for j in crb["modes"]]
    if labels[0].startswith("piston"):
        rest = [x for x in labels if x.startswith("Noll")]
        tail = f" and {rest[0]}-{rest[-1].split()[-1]} made orthogonal to them" if rest else ""
        return f"per-segment piston, tip and tilt{tail}"
    return f"Noll {crb['modes'][0]}-{crb['modes'][-1]}"


def _piston_markdown(report: dict[str, Any]) -> list[str]:
    """Segmented pupils: each estimator's piston capture range and its bins."""
    sections = {k: e["piston"] for k, e in report["estimators"].items() if "piston" in e}
    if not sections:
        return []
    first = next(iter(sections.values()))
    names = list(sections)
    lines = [
        "",
        f"Segment pistons: fraction of segments within {first['tolerance_nm']:g} nm of OPD "
        "(piston error: the segment's mean error less the mean over the segments), per bin "
        "of each sample's piston range (largest |piston - mean|); piston capture range: "
        f"the unbroken run of bins from 0 with at least {100 * first['fraction']:g} %.",
        "",
        "| piston range (nm) | n | " + " | ".join(names) + " |",
        "| --- | ---: | " + " | ".join("---:" for _ in names) + " |",
        "| capture range (nm) | | "
        + " | ".join(f"{sections[k]['piston_capture_range_nm']:.0f}" for k in names)
        + " |",
        "| all samples | | "
        + " | ".join(f"{100 * sections[k]['within_fraction']:.1f} %" for k in names)
        + " |",
    ]
    if any("piston_error_over_crb" in sec for sec in sections.values()):
        lines.append(
            "| error / CRB inside the range: median (90th pct.); RMS error, RMS CRB | | "
            + " | ".join(
                f"{sections[k]['piston_error_over_crb']:.2f} "
                f"({sections[k]['piston_error_over_crb_p90']:.2f}); "
                f"{sections[k]['piston_error_rms_nm']:.3g}, "
                f"{sections[k]['piston_crb_rms_nm']:.3g} nm"
                if "piston_error_over_crb" in sections[k] else "-"
                for k in names
            )
            + " |"
        )  # fmt: skip
    for rows in zip(*(sections[n]["bins"] for n in names), strict=True):
        r0 = rows[0]
        cells = ["-" if r["within_fraction"] is None else f"{100 * r['within_fraction']:.1f} %"
                 for r in rows]  # fmt: skip
        lines.append(f"| {r0['lo_nm']:.0f}-{r0['hi_nm']:.0f} | {r0['samples']} | "
                     + " | ".join(cells) + " |")  # fmt: skip
    return lines


def _binned_median(
    x: np.ndarray, y: np.ndarray, width: float = 25.0
) -> tuple[np.ndarray, np.ndarray]:
    """Bin centres and medians of y in `width` bins of x (`bin_masks`; empty bins skipped)."""
    n_bins = max(math.ceil(float(x.max()) / width - 1e-9), 1) if x.size else 1
    centres, med = [], []
    for k, inside in enumerate(bin_masks(x, width, n_bins)):
        sel = inside & np.isfinite(y)
        if sel.any():
            centres.append((k + 0.5) * width)
            med.append(np.median(y[sel]))
    return np.asarray(centres), np.asarray(med)


def _loop_bins(rep: dict[str, Any]) -> list[np.ndarray]:
    """Samples of each closed-loop table bin, by the metrics' own rule."""
    cr = rep["capture_range"]
    res = np.asarray(rep["per_sample"]["residual_rms_nm"])
    return bin_masks(res[:, 0], cr["bin_width_nm"], len(cr["bins"]))


def _plot_metrics(report: dict[str, Any], out: Path) -> list[Path]:
    plt = _pyplot()
    ps = report["per_sample"]
    t = np.asarray(ps["true_rms_nm"])
    paths = []
    for key, ylabel, fname in (
        ("residual_rms_nm", "residual RMS [nm]", "residual_vs_rms.png"),
        ("pearson", "Pearson correlation", "pearson_vs_rms.png"),
    ):
        fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
        for i, (name, vals) in enumerate(ps[key].items()):
            y = np.asarray(vals, dtype=np.float64)
            colour = f"C{i}"
            ax.scatter(t, y, s=4, alpha=0.25, color=colour)
            xc, ym = _binned_median(t, y)
            cr = report["estimators"][name]["capture_range_nm"]
            ax.plot(xc, ym, "-o", ms=3, color=colour, label=f"{name} (capture {cr:.0f} nm)")
            if key == "residual_rms_nm":
                ax.axvline(cr, color=colour, ls=":", lw=1)
        if key == "residual_rms_nm" and "crb_rms_nm" in ps:
            xc, ym = _binned_median(t, np.asarray(ps["crb_rms_nm"], dtype=np.float64))
            ax.plot(xc, ym, "k-", lw=2, label="Cramer-Rao bound (median)")
        if key == "residual_rms_nm":
            x = np.linspace(0, max(t.max(), 25), 200)
            ax.plot(x, np.maximum(0.2 * x, 10.0), "k--", lw=1, label="pass: max(0.2 x RMS, 10 nm)")
            ax.plot(x, x, color="0.6", lw=1, label="no correction (residual = RMS)")
            ax.set_yscale("log")
        ax.set_xlabel("true OPD RMS [nm]")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        fig.savefig(out / fname, dpi=110)
        plt.close(fig)
        paths.append(out / fname)
    return paths


def _plot_examples(report: dict[str, Any], out: Path) -> Path | None:
    plt = _pyplot()
    ex = report["examples"]
    if not ex["index"]:
        return None
    mask, names = np.asarray(ex["mask"], bool), list(ex["estimates"])
    rows, cols = len(ex["index"]), 1 + 2 * len(names)
    fig, axes = plt.subplots(
        rows, cols, figsize=(2.1 * cols, 2.1 * rows), squeeze=False, constrained_layout=True
    )
    for r, i in enumerate(ex["index"]):
        true = np.where(mask, ex["true"][r], np.nan)
        lim = np.nanmax(np.abs(true))
        panels = [(true, f"#{i} true, {np.nanstd(true):.0f} nm RMS")]
        for name in names:
            est = np.where(mask, ex["estimates"][name][r], np.nan)
            diff = est - true
            diff -= np.nanmean(diff)
            panels += [(est, f"{name}"), (diff, f"residual {np.nanstd(diff):.1f} nm")]
        for c, (img, title) in enumerate(panels):
            ax = axes[r, c]
            im = ax.imshow(img, cmap="RdBu_r", vmin=-lim, vmax=lim, origin="lower")
            ax.set_title(title, fontsize=7)
            ax.set_axis_off()
        fig.colorbar(im, ax=axes[r, -1], shrink=0.8, label="OPD [nm]")
    fig.savefig(out / "examples.png", dpi=110)
    plt.close(fig)
    return out / "examples.png"


def write_report(report: dict[str, Any], out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write report.json, report.md, examples.npz and the PNG plots into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plain = {k: v for k, v in report.items() if k != "examples"}
    paths = {"json": write_json_atomic(out / "report.json", jsonable(plain))}
    write_text_atomic(out / "report.md", _markdown(jsonable(plain)))
    paths["markdown"] = out / "report.md"
    ex = report["examples"]
    if ex["index"]:
        arrays = {
            "index": np.asarray(ex["index"]),
            "true_nm": np.stack(ex["true"]),
            "mask": np.asarray(ex["mask"]),
        }
        arrays.update(
            {"est_nm_" + re.sub(r"\W", "_", k): np.stack(v) for k, v in ex["estimates"].items()}
        )
        np.savez_compressed(out / "examples.npz", **arrays)
        paths["examples_npz"] = out / "examples.npz"
    for p in _plot_metrics(report, out):
        paths[p.stem] = p
    if (p := _plot_examples(report, out)) is not None:
        paths["examples"] = p
    return paths


def load_report(path: str | os.PathLike) -> dict[str, Any]:
    """Read a report.json back."""
    return json.loads(Path(path).read_text())


def _edge(value: float | None) -> str:
    return "none (no bin passes)" if value is None else f"{value:.0f} nm"


def _loop_markdown(rep: dict[str, Any]) -> str:
    lines = [
        f"# Closed loop: {rep['estimator']}",
        "",
        f"Data `{rep['data']}` ({rep['n_samples']} samples), {rep['iterations']} iterations, "
        f"gain {rep['gain']:g}, wavelengths {rep['wavelengths_um']} um, noise {rep['noise']}.",
        "",
        f"Closed-loop capture range: **{rep['capture_range_nm']:.0f} nm** "
        "(median final residual < 10 nm, unbroken run from the 25-50 nm bin); largest "
        f"passing bin edge: {_edge(rep['largest_passing_nm'])}.",
        "",
        "| bin (nm) | n | "
        + " | ".join(f"it {k}" for k in range(rep["iterations"] + 1))
        + " | pass |",
        "| --- | ---: | " + " | ".join("---:" for _ in range(rep["iterations"] + 1)) + " | --- |",
    ]
    res = np.asarray(rep["per_sample"]["residual_rms_nm"])
    for row, sel in zip(rep["capture_range"]["bins"], _loop_bins(rep), strict=True):
        meds = np.median(res[sel], axis=0) if sel.any() else [np.nan] * res.shape[1]
        tag = "-" if not row["judged"] else ("pass" if row["passed"] else "FAIL")
        lines.append(
            f"| {row['lo_nm']:.0f}-{row['hi_nm']:.0f} | {row['count']} | "
            + " | ".join(f"{m:.1f}" for m in meds)
            + f" | {tag} |"
        )
    return "\n".join(lines) + "\n"


def write_loop_report(report: dict[str, Any], out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write loop.json, loop.md and loop.png (median residual per iteration, per bin)."""
    plt = _pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": write_json_atomic(out / "loop.json", jsonable(report))}
    write_text_atomic(out / "loop.md", _loop_markdown(report))
    paths["markdown"] = out / "loop.md"
    res = np.asarray(report["per_sample"]["residual_rms_nm"])
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    its = np.arange(res.shape[1])
    for row, sel in zip(report["capture_range"]["bins"], _loop_bins(report), strict=True):
        if sel.sum():
            ax0.plot(
                its,
                np.median(res[sel], axis=0),
                "-o",
                ms=3,
                label=f"{row['lo_nm']:.0f}-{row['hi_nm']:.0f} nm",
            )
    ax0.axhline(10, color="k", ls="--", lw=1)
    ax0.set(
        yscale="log",
        xlabel="iteration",
        ylabel="median residual RMS [nm]",
        title=f"{report['estimator']}, gain {report['gain']:g}",
    )
    ax0.legend(fontsize=6, ncol=2)
    ax1.scatter(res[:, 0], res[:, -1], s=4, alpha=0.4)
    ax1.axhline(10, color="k", ls="--", lw=1, label="10 nm")
    ax1.axvline(report["capture_range_nm"], color="C3", ls=":", label="closed-loop capture range")
    ax1.set(yscale="log", xlabel="initial OPD RMS [nm]", ylabel="final residual RMS [nm]")
    ax1.legend(fontsize=7)
    for ax in (ax0, ax1):
        ax.grid(alpha=0.3)
    fig.savefig(out / "loop.png", dpi=110)
    plt.close(fig)
    paths["png"] = out / "loop.png"
    return paths
