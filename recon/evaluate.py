"""`recon eval`: every reconstructor on one test set, the same metrics, one report.

    report = evaluate({"analytic@1um": create_baseline("analytic", path)}, path)
    paths = write_report(report, "reports/eval-20250101-120000")

The report holds, per estimator, the per-sample residual RMS and Pearson correlation,
a summary, the capture range with its per-bin table (`recon.metrics`), and the ratio
of its capture range to the analytic baseline's. `write_report` writes it as JSON and
a Markdown table, with PNG plots as the paper shows them (example maps; Pearson and
residual RMS versus true RMS, all estimators on the same axes).
"""

from __future__ import annotations

import datetime as _dt
import itertools
import json
import math
import os
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from recon.estimator import Estimator
from recon.metrics import capture_range, pearson, residual_rms_nm

__all__ = [
    "default_out_dir",
    "evaluate",
    "jsonable",
    "load_report",
    "read_test_set",
    "write_report",
]

ProgressFn = Callable[[int], None]


def default_out_dir(prefix: str = "eval") -> Path:
    """``reports/<prefix>-YYYYmmdd-HHMMSS`` under the working directory."""
    return Path("reports") / f"{prefix}-{_dt.datetime.now():%Y%m%d-%H%M%S}"


def read_test_set(path: str | os.PathLike) -> dict[str, Any]:
    """Open a dataset file for evaluation: handle, wavelengths [m], pupil mask, provenance."""
    from data.readers import attr_value, check_dataset_file, open_h5
    from sim.pupil import pupil_mask

    f = open_h5(Path(path))
    check_dataset_file(f, required=("intensity", "opd", "rms", "pupil", "wavelength"))
    attrs = {k: attr_value(v) for k, v in f.attrs.items()}
    return {
        "file": f,
        "wavelengths_m": [float(w) for w in f["wavelength"][:]],
        "mask": pupil_mask(np.asarray(f["pupil"][:], dtype=np.float64)),
        "n": int(f["intensity"].shape[0]),
        "npix": int(f["intensity"].shape[-1]),
        "info": {
            "path": str(Path(path).absolute()),
            "split": attrs.get("split"),
            "seed": attrs.get("seed"),
            "fingerprint": attrs.get("fingerprint"),
            "config": attrs.get("config"),
        },
    }


def _example_indices(rms: np.ndarray, k: int) -> list[int]:
    """k samples spread over the true RMS range (nearest to quantiles 0.1 ... 0.85)."""
    if k <= 0 or rms.size == 0:
        return []
    targets = np.quantile(rms, np.linspace(0.1, 0.85, k))
    out: list[int] = []
    for t in targets:
        for i in np.argsort(np.abs(rms - t)):
            if int(i) not in out:
                out.append(int(i))
                break
    return out


def evaluate(
    estimators: Mapping[str, Estimator],
    data_path: str | os.PathLike,
    batch_size: int = 64,
    max_samples: int | None = None,
    n_examples: int = 3,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Run every estimator on the test set; per-sample metrics, summaries, capture ranges.

    Args:
        estimators: label -> `Estimator`; each reads its own wavelengths (by value).
        data_path: dataset file (``sim generate --split test``).
        batch_size: samples per read and per `estimate` call.
        max_samples: evaluate only the first N samples.
        n_examples: samples whose maps are kept for the example figure.
        progress: called with the number of samples done after each batch.

    Returns:
        The report (JSON-able except ``examples``, which holds the maps as arrays).
    """
    if not estimators:
        raise ValueError("give at least one estimator")
    ts = read_test_set(data_path)
    f, mask, n = ts["file"], ts["mask"], ts["n"]
    try:
        if max_samples is not None:
            n = min(n, int(max_samples))
        if n == 0:
            raise ValueError(f"{data_path} holds no sample")
        for name, est in estimators.items():
            if est.npix != ts["npix"]:
                raise ValueError(f"{name} needs {est.npix} px frames, the dataset has {ts['npix']}")
        pick = _example_indices(np.asarray(f["rms"][:n], dtype=np.float64), n_examples)
        true_rms = np.empty(n)
        res = {k: np.empty(n) for k in estimators}
        corr = {k: np.empty(n) for k in estimators}
        seconds = dict.fromkeys(estimators, 0.0)
        ex_true: dict[int, np.ndarray] = {}
        ex_est: dict[str, dict[int, np.ndarray]] = {k: {} for k in estimators}
        for a in range(0, n, batch_size):
            b = min(a + batch_size, n)
            frames = np.asarray(f["intensity"][a:b], dtype=np.float32)  # (B, L_file, H, W)
            opd = np.asarray(f["opd"][a:b], dtype=np.float64)  # (B, H, W) [nm]
            true_rms[a:b] = opd[:, mask].std(axis=1)
            for i in pick:
                if a <= i < b:
                    ex_true[i] = opd[i - a].astype(np.float32)
            for name, est in estimators.items():
                t0 = time.perf_counter()
                guess = est.estimate(frames, wavelengths_m=ts["wavelengths_m"])  # (B, H, W)
                seconds[name] += time.perf_counter() - t0
                res[name][a:b] = residual_rms_nm(opd, guess, mask)
                corr[name][a:b] = pearson(opd, guess, mask)
                for i in pick:
                    if a <= i < b:
                        ex_est[name][i] = np.asarray(guess[i - a], dtype=np.float32)
            if progress:
                progress(b - a)
    finally:
        f.close()
    return _assemble(estimators, ts, true_rms, res, corr, seconds, pick, ex_true, ex_est)


def _assemble(
    estimators: Mapping[str, Estimator],
    ts: dict[str, Any],
    true_rms: np.ndarray,
    res: dict[str, np.ndarray],
    corr: dict[str, np.ndarray],
    seconds: dict[str, float],
    pick: list[int],
    ex_true: dict[int, np.ndarray],
    ex_est: dict[str, dict[int, np.ndarray]],
) -> dict[str, Any]:
    """The report dict from the per-sample arrays (see `evaluate`)."""
    from data.schema import package_versions

    n = true_rms.size
    max_rms = 25.0 * math.ceil(float(true_rms.max()) / 25.0) if n else 25.0
    per_est: dict[str, Any] = {}
    for name, est in estimators.items():
        cr = capture_range(true_rms, res[name], max_rms=max_rms)
        per_est[name] = {
            "type": type(est).__name__,
            "wavelengths_um": [round(w * 1e6, 6) for w in est.wavelengths_m],
            "capture_range_nm": cr.capture_range_nm,
            "crossing_nm": cr.crossing_nm,
            "ratio_to_analytic": None,
            "summary": {
                "median_residual_nm": float(np.median(res[name])),
                "mean_residual_nm": float(np.mean(res[name])),
                "median_relative_residual": float(
                    np.median(res[name] / np.maximum(true_rms, 1e-12))
                ),
                "median_pearson": float(np.nanmedian(corr[name])),
                "ms_per_sample": 1e3 * seconds[name] / max(n, 1),
            },
            "capture_range": cr.to_dict(),
        }
    analytic = next(
        (k for k, e in estimators.items() if type(e).__name__ == "AnalyticEstimator"), None
    )
    if analytic is not None:
        ref = per_est[analytic]["capture_range_nm"]
        for entry in per_est.values():
            entry["ratio_to_analytic"] = entry["capture_range_nm"] / ref if ref > 0 else None
    info = {k: v for k, v in ts["info"].items() if k != "config"}
    return {
        "kind": "zwfs-eval-report",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": package_versions(),
        "data": {
            **info,
            "n_samples": n,
            "npix": ts["npix"],
            "wavelengths_um": [round(w * 1e6, 6) for w in ts["wavelengths_m"]],
        },
        "sim_config": ts["info"].get("config"),
        "analytic_reference": analytic,
        "estimators": per_est,
        "per_sample": {
            "true_rms_nm": true_rms.tolist(),
            "residual_rms_nm": {k: v.tolist() for k, v in res.items()},
            "pearson": {k: v.tolist() for k, v in corr.items()},
        },
        "examples": {
            "index": pick,
            "mask": ts["mask"],
            "true": [ex_true[i] for i in pick],
            "estimates": {k: [v[i] for i in pick] for k, v in ex_est.items()},
        },
    }


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


# ------------------------------------------------------------------ writing


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
        "edge of the unbroken passing run from the 25-50 nm bin (0-25 nm not judged).",
        "",
        "| estimator | wavelengths (um) | capture range (nm) | crossing (nm) | ratio to "
        "analytic | median residual (nm) | median Pearson | ms/sample |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    fmt = lambda v, p=1: "-" if v is None else f"{v:.{p}f}"  # noqa: E731
    for name, e in report["estimators"].items():
        s = e["summary"]
        lines.append(
            f"| {name} | {', '.join(f'{w:g}' for w in e['wavelengths_um'])} | "
            f"{e['capture_range_nm']:.0f} | {fmt(e['crossing_nm'])} | "
            f"{fmt(e['ratio_to_analytic'], 2)} | {s['median_residual_nm']:.2f} | "
            f"{fmt(s['median_pearson'], 4)} | {s['ms_per_sample']:.2f} |"
        )
    names = list(report["estimators"])
    lines += [
        "",
        "Median residual RMS (nm) per true-RMS bin (pass / FAIL / not judged):",
        "",
        "| bin (nm) | n | threshold (nm) | " + " | ".join(names) + " |",
        "| --- | ---: | ---: | " + " | ".join("---:" for _ in names) + " |",
    ]
    tables = [report["estimators"][k]["capture_range"]["bins"] for k in names]
    for rows in zip(*tables, strict=True):
        r0 = rows[0]
        cells = []
        for r in rows:
            tag = "" if not r["judged"] else (" pass" if r["passed"] else " FAIL")
            cells.append(f"{fmt(r['median_residual_nm'])}{tag}")
        lines.append(
            f"| {r0['lo_nm']:.0f}-{r0['hi_nm']:.0f} | {r0['count']} | "
            f"{r0['threshold_nm']:.1f} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines) + "\n"


def _binned_median(
    x: np.ndarray, y: np.ndarray, width: float = 25.0
) -> tuple[np.ndarray, np.ndarray]:
    """Bin centres and medians of y in `width` bins of x (empty bins skipped)."""
    edges = np.arange(0, x.max() + width, width) if x.size else np.array([0, width])
    centres, med = [], []
    for lo, hi in itertools.pairwise(edges):
        sel = (x >= lo) & (x < hi) & np.isfinite(y)
        if sel.any():
            centres.append((lo + hi) / 2)
            med.append(np.median(y[sel]))
    return np.asarray(centres), np.asarray(med)


def _plot_metrics(report: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    from sim.cliutil import write_json_atomic

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plain = {k: v for k, v in report.items() if k != "examples"}
    paths = {"json": write_json_atomic(out / "report.json", jsonable(plain))}
    (out / "report.md").write_text(_markdown(jsonable(plain)))
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
