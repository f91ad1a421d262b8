"""Zonal refinement on power-law screens: from the modal fit, and from the network's map.

    python3 scripts/screen_zonal_check.py RUN TEST.h5 [OUT.json]

RUN: a network run; TEST.h5: held-out frames (`sim generate --aberration screen`).
Per 50 nm bin of the true RMS, median residual RMS [nm] (piston removed, in the pupil):
the network alone, + modal, + zonal from the modal fit (the pipeline before 2026-12-08),
+ zonal as `RefinedEstimator(mode="zonal")` runs it now (the modal fit and the
network's own map both polished, the lower misfit kept); no restarts. ms per sample.
Then the zonal fit alone from synthetic starts: the truth plus 10 % and 30 % of its RMS
of a shifted copy of itself (an error with the screen's own spectrum).
"""

from __future__ import annotations

import itertools
import json
import sys
import time
from pathlib import Path

import h5py
import numpy as np

from recon.estimators import NetworkEstimator
from recon.evaluation.metrics import residual_rms_nm
from recon.refine import RefinedEstimator
from recon.refine.symmetry import SYMMETRIES
from sim.config import SimConfig

BINS = np.arange(0, 301, 50)


def main() -> None:
    run, data = sys.argv[1], sys.argv[2]
    out_path = Path(sys.argv[3] if len(sys.argv) > 3 else "studies/screen_zonal.json")
    with h5py.File(data, "r") as f:
        cfg = SimConfig.model_validate_json(f.attrs["config"])
        frames = f["intensity"][:]
        truth = f["opd"][:].astype(np.float64)
    est = RefinedEstimator(NetworkEstimator.from_checkpoint(run), cfg, mode="zonal", restarts=0)
    mask = est.mask
    rms = truth[:, mask].std(1)
    rows = np.arange(len(frames))

    def residual(opd: np.ndarray) -> np.ndarray:
        return residual_rms_nm(truth, opd, mask)

    timed: dict[str, float] = {}

    def clock(name, fn):
        t0 = time.perf_counter()
        result = fn()
        timed[name] = 1e3 * (time.perf_counter() - t0) / len(frames)
        return result

    start = clock("network", lambda: est._start(frames, None, rows, SYMMETRIES[0]))
    modal = clock("modal", lambda: est._refine_batches(frames, None, rows, start, "modal")[0])
    old = clock(
        "zonal from modal", lambda: est._refine_batches(frames, None, rows, modal, "zonal")[0]
    )
    new = clock("zonal estimator", lambda: est.estimate(frames))
    table = {"network": start, "+ modal": modal, "+ zonal from modal": old, "+ zonal (both)": new}
    result = {
        "run": run,
        "data": data,
        "ms_per_sample": timed,
        "bins_nm": BINS.tolist(),
        "rows": {},
    }
    print(f"{'bin [nm]':>9} {'n':>4} " + " ".join(f"{k:>19}" for k in table))
    for lo, hi in itertools.pairwise(BINS):
        sel = (rms >= lo) & (rms < hi)
        meds = [float(np.median(residual(v)[sel])) for v in table.values()]
        result["rows"][f"{lo}-{hi}"] = {"n": int(sel.sum()), **dict(zip(table, meds, strict=True))}
        print(f"{lo:>4}-{hi:<4} {sel.sum():>4} " + " ".join(f"{m:>19.3f}" for m in meds))
    print("ms per sample: " + ", ".join(f"{k} {v:.0f}" for k, v in timed.items()))
    rep = est.last_report
    print(f"good fits {int(rep.good_fit.sum())} of {len(frames)}")
    shifted = np.roll(truth, (7, -5), axis=(1, 2)) * mask
    scale = rms / np.maximum(shifted[:, mask].std(1), 1e-9)
    result["synthetic"] = {}
    for frac in (0.1, 0.3):
        synthetic = truth + frac * scale[:, None, None] * shifted
        polished = est._refine_batches(frames, None, rows, synthetic, "zonal")[0]
        meds = [
            f"{np.median(residual(synthetic)[s]):.1f} -> {np.median(residual(polished)[s]):.2f}"
            for s in ((rms >= lo) & (rms < hi) for lo, hi in itertools.pairwise(BINS))
        ]
        result["synthetic"][str(frac)] = meds
        print(f"zonal from the truth + {frac:.0%} (per bin, start -> fit): " + "; ".join(meds))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
