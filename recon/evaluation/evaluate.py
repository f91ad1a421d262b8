"""`recon eval`: every reconstructor on one test set, the same metrics, one report dict.

    est = create_baseline("analytic", path)
    report = evaluate({est.name: est}, path, reference=est.name)
    paths = write_report(report, "reports/eval-20250101-120000")   # recon.evaluation.report

The report holds, per estimator, the per-sample residual RMS and Pearson correlation,
a summary, the capture range (paper's and strict criteria) with its per-bin table
(`recon.evaluation.metrics`), and the ratio of its capture range to the reference's.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from common.provenance import local_stamp, utc_now_iso
from data.schema import package_versions
from recon.estimators.base import Estimator, needs_clear, run_estimate
from recon.evaluation.metrics import (
    capture_range,
    capture_range_strict,
    pearson,
    piston_capture_range,
    residual_rms_nm,
    segment_piston_errors,
)
from recon.evaluation.testset import TestSet, open_test_set
from recon.refine.solver import CONVERGED, STATUSES

__all__ = ["default_out_dir", "evaluate"]

ProgressFn = Callable[[int], None]


def default_out_dir(prefix: str = "eval") -> Path:
    """``reports/<prefix>-YYYYmmdd-HHMMSS`` under the working directory."""
    return Path("reports") / f"{prefix}-{local_stamp()}"


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
    reference: str | None = None,
    crb: bool | None = None,
) -> dict[str, Any]:
    """Run every estimator on the test set; per-sample metrics, summaries, capture ranges.

    Args:
        estimators: label -> `Estimator`; each reads its own wavelengths (by value).
        data_path: dataset file (``sim generate --split test``).
        batch_size: samples per read and per `estimate` call.
        max_samples: evaluate only the first N samples.
        n_examples: samples whose maps are kept for the example figure.
        progress: called with the number of samples done after each batch.
        reference: the label whose capture range the ratios divide by (the analytic
            baseline, as the paper reports); None: no ratios.
        crb: add the Cramer-Rao bound of each sample's OPD RMS and its per-bin median
            (`recon.evaluation.crb`); None: when the data's config has a photon level.

    Returns:
        The report (JSON-able except ``examples``, which holds the maps as arrays).
    """
    if not estimators:
        raise ValueError("give at least one estimator")
    if reference is not None and reference not in estimators:
        raise ValueError(f"reference {reference!r} is not among the estimators")
    with open_test_set(data_path, required=("intensity", "rms")) as ts:
        f, mask, n = ts.file, ts.mask, ts.n
        if max_samples is not None:
            n = min(n, int(max_samples))
        if n == 0:
            raise ValueError(f"{data_path} holds no sample")
        for name, est in estimators.items():
            if est.npix != ts.npix:
                raise ValueError(f"{name} needs {est.npix} px frames, the dataset has {ts.npix}")
        pick = _example_indices(np.asarray(f["rms"][:n], dtype=np.float64), n_examples)
        true_rms = np.empty(n)
        res = {k: np.empty(n) for k in estimators}
        corr = {k: np.empty(n) for k in estimators}
        seconds = dict.fromkeys(estimators, 0.0)
        pistons = _PistonErrors.of(ts, n, estimators)  # segmented files: per segment
        fits: dict[str, dict[str, list[np.ndarray]]] = {}  # refined estimators' reports
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
            clear = ts.clear(a, b)  # (B or 1, L, H, W)
            for name, est in estimators.items():
                given = clear if ts.illuminated or needs_clear(est) else None
                t0 = time.perf_counter()
                guess = run_estimate(est, frames, ts.wavelengths_m, given)  # (B, H, W)
                seconds[name] += time.perf_counter() - t0
                if (fit := getattr(est, "last_report", None)) is not None:
                    for key in ("good_fit", "starts", "iterations", "status"):
                        fits.setdefault(name, {}).setdefault(key, []).append(getattr(fit, key))
                res[name][a:b] = residual_rms_nm(opd, guess, mask)
                if pistons is not None:
                    pistons.add(name, a, guess - opd)
                corr[name][a:b] = pearson(opd, guess, mask)
                for i in pick:
                    if a <= i < b:
                        ex_est[name][i] = np.asarray(guess[i - a], dtype=np.float32)
            if progress:
                progress(b - a)
    report = _assemble(
        estimators, ts, true_rms, res, corr, seconds, pick, ex_true, ex_est, reference
    )
    if pistons is not None:
        pistons.into(report)
    for name, parts in fits.items():
        got = {key: np.concatenate(v) for key, v in parts.items()}
        report["per_sample"].setdefault("good_fit", {})[name] = got["good_fit"].tolist()
        report["per_sample"].setdefault("fit_status", {})[name] = got["status"].tolist()
        report["estimators"][name]["summary"] |= {
            "good_fit_fraction": float(got["good_fit"].mean()),
            "restarted_fraction": float((got["starts"] > 1).mean()),
            "converged_fraction": float((got["status"] == CONVERGED).mean()),
            "fit_status_counts": {k: int((got["status"] == k).sum()) for k in STATUSES},
            "median_iterations": float(np.median(got["iterations"])),
        }
    if crb is None:
        crb = ts.sim_config().detector.photons is not None if ts.info.get("config") else False
    if crb:
        report["crb"] = _crb_section(data_path, n, true_rms, report)
        report["per_sample"]["crb_rms_nm"] = report["crb"].pop("crb_rms_nm")
        if "segment_piston_crb_nm" in report["crb"]:
            bound = np.asarray(report["crb"].pop("segment_piston_crb_nm"))
            report["per_sample"]["segment_piston_crb_nm"] = bound.tolist()
            if pistons is not None:
                pistons.against_bound(report, bound)
    return report


class _PistonErrors:
    """Per-segment piston errors of every estimator on a file with segment pistons."""

    def __init__(self, weights: np.ndarray, true_pistons: np.ndarray, names: list[str]):
        self.weights = weights  # (S, H, W)
        p = true_pistons - true_pistons.mean(axis=1, keepdims=True)
        self.piston_range = np.abs(p).max(axis=1)  # (n,) [nm OPD]
        self.errors = {k: np.empty(true_pistons.shape) for k in names}

    @classmethod
    def of(cls, ts: Any, n: int, estimators: Mapping[str, Estimator]) -> _PistonErrors | None:
        if "segment_coefficients" not in ts.file:
            return None
        from sim.segments import segment_means_weights

        weights = segment_means_weights(ts.sim_config())
        if weights.shape[-1] != ts.npix:  # binned frames: the maps are not the segments'
            return None
        pistons = np.asarray(ts.file["segment_coefficients"][:n, :, 0], dtype=np.float64)
        return cls(weights, pistons, list(estimators))

    def add(self, name: str, start: int, error_maps: np.ndarray) -> None:
        """Errors of estimate - truth maps (B, H, W) [nm] of samples start..start + B."""
        e = segment_piston_errors(error_maps, self.weights)
        self.errors[name][start : start + len(e)] = e

    def against_bound(self, report: dict[str, Any], bound: np.ndarray) -> None:
        """Piston errors against the CRB (n, S) [nm] over the samples inside each
        estimator's piston capture range: each sample's RMS over its segments, the ratio's
        median over samples (``piston_error_over_crb``, as the bins' medians judge) and
        the RMS over all of them (``piston_error_rms_nm``, ``piston_crb_rms_nm``)."""
        for name, e in self.errors.items():
            section = report["estimators"][name]["piston"]
            inside = self.piston_range <= section["piston_capture_range_nm"]
            if not inside.any():
                continue
            err, crb = e[inside], bound[inside]
            ratio = np.sqrt(np.mean(err**2, axis=1) / np.nanmean(crb**2, axis=1))
            section |= {
                "piston_error_rms_nm": float(np.sqrt(np.mean(err**2))),
                "piston_crb_rms_nm": float(np.sqrt(np.nanmean(crb**2))),
                "piston_error_over_crb": float(np.nanmedian(ratio)),
                "piston_error_over_crb_p90": float(np.nanpercentile(ratio, 90)),
            }

    def into(self, report: dict[str, Any]) -> None:
        """Each estimator's ``piston`` section; per-sample ranges and errors."""
        for name, e in self.errors.items():
            report["estimators"][name]["piston"] = piston_capture_range(self.piston_range, e)
        report["per_sample"]["piston_range_nm"] = self.piston_range.tolist()
        report["per_sample"]["segment_piston_error_nm"] = {
            k: v.tolist() for k, v in self.errors.items()
        }


def _crb_section(
    data_path: str | os.PathLike, n: int, true_rms: np.ndarray, report: dict[str, Any]
) -> dict[str, Any]:
    """Per-sample CRB [nm] and its median in the capture-range bins of the report."""
    from recon.evaluation.crb import crb_for_test_set
    from recon.evaluation.metrics import bin_masks

    out = crb_for_test_set(data_path, max_samples=n)
    values = np.asarray(out["crb_rms_nm"])
    first = next(iter(report["estimators"].values()))["capture_range"]
    edges = [(row["lo_nm"], row["hi_nm"]) for row in first["bins"]]
    masks = bin_masks(true_rms, first["bin_width_nm"], len(edges))
    out["bins"] = [
        {
            "lo_nm": lo,
            "hi_nm": hi,
            "median_crb_nm": float(np.nanmedian(values[m])) if m.any() else None,
        }
        for (lo, hi), m in zip(edges, masks, strict=True)
    ]
    out["median_crb_nm"] = float(np.nanmedian(values))
    return out


def _assemble(
    estimators: Mapping[str, Estimator],
    ts: TestSet,
    true_rms: np.ndarray,
    res: dict[str, np.ndarray],
    corr: dict[str, np.ndarray],
    seconds: dict[str, float],
    pick: list[int],
    ex_true: dict[int, np.ndarray],
    ex_est: dict[str, dict[int, np.ndarray]],
    reference: str | None,
) -> dict[str, Any]:
    """The report dict from the per-sample arrays (see `evaluate`)."""
    n = true_rms.size
    max_rms = 25.0 * math.ceil(float(true_rms.max()) / 25.0) if n else 25.0
    per_est: dict[str, Any] = {}
    for name, est in estimators.items():
        cr = capture_range(true_rms, res[name], max_rms=max_rms)
        strict = capture_range_strict(true_rms, res[name], max_rms=max_rms)
        per_est[name] = {
            "type": type(est).__name__,
            "wavelengths_um": [round(w * 1e6, 6) for w in est.wavelengths_m],
            "capture_range_nm": cr.capture_range_nm,
            "crossing_nm": cr.crossing_nm,
            "capture_range_strict_nm": strict.capture_range_nm,
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
            "capture_range_strict": strict.to_dict(),
        }
    if reference is not None:
        ref = per_est[reference]["capture_range_nm"]
        for entry in per_est.values():
            entry["ratio_to_analytic"] = entry["capture_range_nm"] / ref if ref > 0 else None
    info = {k: v for k, v in ts.info.items() if k != "config"}
    return {
        "kind": "zwfs-eval-report",
        "created": utc_now_iso(),
        "versions": package_versions(),
        "data": {
            **info,
            "n_samples": n,
            "npix": ts.npix,
            "wavelengths_um": [round(w * 1e6, 6) for w in ts.wavelengths_m],
        },
        "sim_config": ts.info.get("config"),
        "analytic_reference": reference,
        "estimators": per_est,
        "per_sample": {
            "true_rms_nm": true_rms.tolist(),
            "residual_rms_nm": {k: v.tolist() for k, v in res.items()},
            "pearson": {k: v.tolist() for k, v in corr.items()},
        },
        "examples": {
            "index": pick,
            "mask": ts.mask,
            "true": [ex_true[i] for i in pick],
            "estimates": {k: [v[i] for i in pick] for k, v in ex_est.items()},
        },
    }
