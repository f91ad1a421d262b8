"""The metrics (docs/evaluation.md): one piece of code for every reconstructor.

- `residual_rms_nm`: RMS [nm] of estimate - truth over the pupil, piston removed.
- `pearson`: Pearson correlation of truth and estimate over the pupil, per sample.
- `capture_range`: single-shot capture range from 25 nm bins of true RMS.
- `closed_loop_capture_range`: the same bins, judged on the final closed-loop residual.
- `segment_piston_errors`, `piston_capture_range`: segmented pupils, per segment.

Capture range: bin the samples by true RMS in 25 nm bins
([0, 25), [25, 50), ...). A bin passes when its median residual RMS is at most
max(0.2 x the bin centre, 10 nm); the true RMS used in the criterion is the bin
*centre* (not the median true RMS of the bin's samples, so that the criterion of a
bin does not depend on how the samples fall in it). The 0-25 nm bin is reported but
not judged. The capture range is the upper edge of the last bin of the unbroken run
of passing bins that starts at the 25-50 nm bin; when the 25-50 nm bin fails the run
is empty and the capture range is its lower edge, 25 nm. An empty bin breaks the run
(nothing shows the estimator works there).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = [
    "BinResult",
    "CaptureRange",
    "bin_masks",
    "capture_range",
    "capture_range_strict",
    "closed_loop_capture_range",
    "pearson",
    "piston_capture_range",
    "residual_rms_nm",
    "segment_piston_errors",
]

PISTON_TOLERANCE_NM = 10.0
"""A segment is phased when its piston error is within this [nm OPD]."""
PISTON_FRACTION = 0.99
"""The piston capture range: bins where at least this fraction of segments are phased."""

ArrayLike = np.ndarray | torch.Tensor


def _as_numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _pupil_values(maps: ArrayLike, mask: ArrayLike) -> np.ndarray:
    """(B, H, W) or (H, W) maps -> (B, P) values inside the boolean pupil `mask` (H, W)."""
    a = _as_numpy(maps)
    if a.ndim == 2:
        a = a[None]
    m = _as_numpy(mask).astype(bool)
    if a.shape[-2:] != m.shape:
        raise ValueError(f"maps of shape {a.shape[-2:]} do not match the pupil mask {m.shape}")
    if not m.any():
        raise ValueError("the pupil mask selects no pixel")
    return a[:, m]  # (B, H, W) -> (B, P)


def residual_rms_nm(true: ArrayLike, est: ArrayLike, mask: ArrayLike) -> np.ndarray:
    """RMS [nm] of est - true over the pupil with piston removed, per sample.

    Args:
        true, est: OPD maps (B, H, W) or (H, W) [nm].
        mask: (H, W) bool, the pupil pixels.

    Returns:
        (B,) float64. Piston is unobservable by a ZWFS, so the mean of the difference
        inside the pupil is removed (equivalent to removing it from both maps).
    """
    diff = _pupil_values(est, mask) - _pupil_values(true, mask)
    return diff.std(axis=1)


def pearson(true: ArrayLike, est: ArrayLike, mask: ArrayLike) -> np.ndarray:
    """Pearson correlation (B,) of true and estimated OPD over the pupil.

    NaN where either map is constant inside the pupil (the correlation is undefined);
    the summaries use NaN-aware medians.
    """
    t = _pupil_values(true, mask)
    e = _pupil_values(est, mask)
    t = t - t.mean(axis=1, keepdims=True)
    e = e - e.mean(axis=1, keepdims=True)
    denom = np.sqrt((t * t).sum(axis=1) * (e * e).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (t * e).sum(axis=1) / denom
    return np.where(denom > 0, r, np.nan)


@dataclass(frozen=True)
class BinResult:
    """One true-RMS bin [lo_nm, hi_nm) of a capture-range table.

    `passed` is None for a bin that is not judged (0-25 nm) or holds no sample.
    `margin_nm` = threshold - median residual (>= 0 passes; strict > 0 in closed loop).
    """

    lo_nm: float
    hi_nm: float
    centre_nm: float
    count: int
    median_true_rms_nm: float | None
    median_residual_nm: float | None
    threshold_nm: float
    margin_nm: float | None
    judged: bool
    passed: bool | None


@dataclass(frozen=True)
class CaptureRange:
    """Capture range [nm] and the per-bin table it comes from.

    Attributes:
        capture_range_nm: upper edge of the last bin of the unbroken passing run
            starting at the first judged bin (its lower edge when that bin fails).
        crossing_nm: true RMS [nm] where the criterion is first crossed, linear
            interpolation of the margin between the centres of the last passing
            bin (or the 0-25 bin) and the first failing one; None if no bin fails.
        largest_passing_nm: upper edge of the largest passing bin, run or not.
        criterion: the rule, in words.
        bins: the table.
    """

    capture_range_nm: float
    crossing_nm: float | None
    largest_passing_nm: float | None
    bin_width_nm: float
    criterion: str
    bins: list[BinResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return asdict(self)


def bin_masks(true_rms: ArrayLike, bin_width: float, n_bins: int) -> list[np.ndarray]:
    """Which samples fall in each bin: [k w, (k+1) w), the last bin closed at its top.

    The one binning rule of every table and plot (the top sample of a test set whose
    largest RMS is a bin edge belongs to the last bin, not to an empty one past it).
    """
    t = _as_numpy(true_rms).ravel()
    masks = []
    for k in range(n_bins):
        lo, hi = k * bin_width, (k + 1) * bin_width
        masks.append((t >= lo) & ((t < hi) if k < n_bins - 1 else (t <= hi)))
    return masks


def _bin_table(
    true_rms: ArrayLike,
    residual: ArrayLike,
    bin_width: float,
    max_rms: float | None,
    threshold_of: Callable[[float], float],
    strict: bool,
    first_judged: int,
) -> list[BinResult]:
    t = _as_numpy(true_rms).ravel()
    r = _as_numpy(residual).ravel()
    if t.shape != r.shape:
        raise ValueError(f"true_rms {t.shape} and residual {r.shape} differ in length")
    if bin_width <= 0:
        raise ValueError(f"bin_width must be positive, got {bin_width}")
    top = float(np.max(t)) if max_rms is None and t.size else float(max_rms or bin_width)
    n_bins = max(int(np.ceil(top / bin_width - 1e-9)), first_judged + 1)
    rows = []
    for k, inside in enumerate(bin_masks(t, bin_width, n_bins)):
        lo, hi = k * bin_width, (k + 1) * bin_width
        centre = (lo + hi) / 2
        threshold = threshold_of(centre)
        count = int(inside.sum())
        med_r = float(np.median(r[inside])) if count else None
        med_t = float(np.median(t[inside])) if count else None
        margin = None if med_r is None else threshold - med_r
        judged = k >= first_judged
        ok = None if margin is None else (margin > 0 if strict else margin >= 0)
        rows.append(
            BinResult(
                lo,
                hi,
                centre,
                count,
                med_t,
                med_r,
                threshold,
                margin,
                judged,
                ok if judged else None,
            )
        )
    return rows


def _summarise(
    rows: list[BinResult], first_judged: int, bin_width: float, criterion: str
) -> CaptureRange:
    judged = rows[first_judged:]
    run_end = judged[0].lo_nm
    first_fail = None
    for row in judged:
        if not row.passed:
            first_fail = row
            break
        run_end = row.hi_nm
    crossing = None
    if first_fail is not None:
        k = rows.index(first_fail)
        prev = rows[k - 1] if k > 0 else None
        if first_fail.margin_nm is None or prev is None or prev.margin_nm is None:
            crossing = first_fail.lo_nm
        elif prev.margin_nm < 0:
            crossing = first_fail.lo_nm
        else:  # margin goes from >= 0 at prev.centre to < 0 at first_fail.centre
            frac = prev.margin_nm / (prev.margin_nm - first_fail.margin_nm)
            crossing = prev.centre_nm + frac * (first_fail.centre_nm - prev.centre_nm)
    passing = [row.hi_nm for row in judged if row.passed]
    return CaptureRange(
        capture_range_nm=float(run_end),
        crossing_nm=None if crossing is None else float(crossing),
        largest_passing_nm=float(max(passing)) if passing else None,
        bin_width_nm=float(bin_width),
        criterion=criterion,
        bins=rows,
    )


def capture_range(
    true_rms: ArrayLike,
    residual_rms: ArrayLike,
    bin_width: float = 25.0,
    max_rms: float | None = None,
    fraction: float = 0.2,
    floor_nm: float = 10.0,
) -> CaptureRange:
    """Single-shot capture range; see the module docstring.

    Args:
        true_rms: (n,) true OPD RMS [nm] of each sample.
        residual_rms: (n,) residual RMS [nm] of each sample's estimate.
        bin_width: bin width [nm] (25).
        max_rms: last bin edge [nm]; None: the largest true RMS rounded up to a bin.
        fraction, floor_nm: a bin passes when median residual <= max(fraction x
            bin centre, floor_nm).
    """
    rows = _bin_table(
        true_rms,
        residual_rms,
        bin_width,
        max_rms,
        lambda c: max(fraction * c, floor_nm),
        strict=False,
        first_judged=1,
    )
    crit = (
        f"median residual RMS <= max({fraction:g} x bin centre, {floor_nm:g} nm), "
        f"{bin_width:g} nm bins, 0-{bin_width:g} nm bin not judged"
    )
    return _summarise(rows, 1, bin_width, crit)


STRICT_FRACTION = 0.05
STRICT_FLOOR_NM = 2.0
"""The strict criterion (what an AO loop needs): median residual <= max(0.05 x RMS, 2 nm)."""


def capture_range_strict(
    true_rms: ArrayLike,
    residual_rms: ArrayLike,
    bin_width: float = 25.0,
    max_rms: float | None = None,
) -> CaptureRange:
    """`capture_range` with the strict criterion max(0.05 x bin centre, 2 nm)."""
    return capture_range(
        true_rms, residual_rms, bin_width, max_rms, STRICT_FRACTION, STRICT_FLOOR_NM
    )


def closed_loop_capture_range(
    true_rms: ArrayLike,
    final_residual_rms: ArrayLike,
    bin_width: float = 25.0,
    max_rms: float | None = None,
    threshold_nm: float = 10.0,
) -> CaptureRange:
    """Closed-loop capture range: a bin passes when its median final residual < threshold_nm.

    Same bins and same run rule as `capture_range` (the 0-25 nm bin reported, not
    judged); `largest_passing_nm` gives the largest passing bin even past a gap.
    """
    rows = _bin_table(
        true_rms,
        final_residual_rms,
        bin_width,
        max_rms,
        lambda _c: threshold_nm,
        strict=True,
        first_judged=1,
    )
    crit = (
        f"median final residual RMS < {threshold_nm:g} nm, {bin_width:g} nm bins, "
        f"0-{bin_width:g} nm bin not judged"
    )
    return _summarise(rows, 1, bin_width, crit)


def segment_piston_errors(error_maps: ArrayLike, weights: ArrayLike) -> np.ndarray:
    """(B, S) piston error [nm OPD] of each segment: the mean of estimate - truth over its
    pixels (`weights` (S, H, W), each summing to 1: `sim.segments.segment_means_weights`),
    less the mean over the segments (a piston common to all is invisible to the ZWFS)."""
    d = np.einsum("bhw,shw->bs", _as_numpy(error_maps), _as_numpy(weights))
    return d - d.mean(axis=1, keepdims=True)


def piston_capture_range(
    piston_range_nm: ArrayLike,
    errors_nm: ArrayLike,
    bin_width: float = 50.0,
    tolerance_nm: float = PISTON_TOLERANCE_NM,
    fraction: float = PISTON_FRACTION,
) -> dict[str, Any]:
    """The largest segment-piston range in which `fraction` of segments end within
    `tolerance_nm`.

    Samples are binned by their piston range (the largest |piston - mean piston| over
    their segments [nm OPD]) in `bin_width` bins from 0; the capture range is the upper
    edge of the unbroken run of passing bins from the first (an empty bin breaks it).
    errors_nm: (n, S) `segment_piston_errors`.
    """
    t = _as_numpy(piston_range_nm).ravel()
    e = np.abs(_as_numpy(errors_nm))
    if e.ndim != 2 or e.shape[0] != t.size:
        raise ValueError(f"errors {e.shape} must be (samples, segments) for {t.size} samples")
    n_bins = max(int(np.ceil(float(t.max(initial=0.0)) / bin_width - 1e-9)), 1)
    rows, capture, unbroken = [], 0.0, True
    for k, inside in enumerate(bin_masks(t, bin_width, n_bins)):
        seg = e[inside].ravel()
        within = float(np.mean(seg <= tolerance_nm)) if seg.size else None
        ok = within is not None and within >= fraction
        unbroken = unbroken and ok
        if unbroken:
            capture = (k + 1) * bin_width
        rows.append(
            {
                "lo_nm": k * bin_width,
                "hi_nm": (k + 1) * bin_width,
                "samples": int(inside.sum()),
                "within_fraction": within,
                "median_abs_error_nm": float(np.median(seg)) if seg.size else None,
                "ok": ok,
            }
        )
    return {
        "piston_capture_range_nm": capture,
        "tolerance_nm": tolerance_nm,
        "fraction": fraction,
        "bin_width_nm": bin_width,
        "within_fraction": float(np.mean(e <= tolerance_nm)) if e.size else None,
        "bins": rows,
    }
