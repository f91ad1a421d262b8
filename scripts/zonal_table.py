"""A network + zonal refinement on a held-out set, per 25 nm bin, against the targets.

    python3 scripts/zonal_table.py RUN TEST.h5 [OUT.json] [--n N]

RUN: a network run; TEST.h5: held-out frames (`sim generate --split test`, any
aberration class). `RefinedEstimator(mode="zonal")` with its defaults (the median of
the network's 8 views as the start, restarts from each view). Prints per 25 nm bin of
the true RMS the median residual RMS [nm] (in the pupil, piston removed) and the
screens' target max(0.02 x RMS, 1 nm) (modes + 20 nm beyond: 1 nm); with a photon
level in the file, also the median Cramer-Rao bound of the zonal model
(`zonal_crb_rms_nm`, ~7 s per sample) and the ratio. Then ms per sample, statuses
and starts. Writes OUT.json (default studies/zonal_table.json).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from recon.estimators import NetworkEstimator
from recon.evaluation.metrics import residual_rms_nm
from recon.refine import FrameModel, RefinedEstimator
from recon.refine.crb import zonal_crb_rms_nm
from sim.config import SimConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a network's run folder")
    parser.add_argument("data", help="held-out frames (HDF5)")
    parser.add_argument("out", nargs="?", default="studies/zonal_table.json", type=Path)
    parser.add_argument("--n", type=int, default=None, help="the first N samples only")
    args = parser.parse_args()
    run, data, out_path, n = args.run, args.data, args.out, args.n
    with h5py.File(data, "r") as f:
        cfg = SimConfig.model_validate_json(f.attrs["config"])
        frames, truth = f["intensity"][:n], f["opd"][:n].astype(np.float64)
    est = RefinedEstimator(NetworkEstimator.from_checkpoint(run), cfg, mode="zonal")
    t0 = time.perf_counter()
    opd = est.estimate(frames)
    ms = 1e3 * (time.perf_counter() - t0) / len(frames)
    mask = est.mask
    residual = residual_rms_nm(truth, opd, mask)
    rms = truth[:, mask].std(1)
    noisy = est.frame_noise.noisy
    crb = None
    if noisy:
        crb = zonal_crb_rms_nm(FrameModel(cfg, dtype=torch.float64), truth, est.frame_noise)
    rows = []
    print(f"{data}: {len(frames)} samples, {run}")
    head = f"{'bin (nm)':>9} {'n':>3} {'residual nm':>11} {'screen target':>13}"
    print(head + (f" {'zonal CRB nm':>12} {'ratio':>6}" if noisy else ""))
    for lo in range(0, int(rms.max()) + 25, 25):
        sel = (rms >= lo) & (rms < lo + 25)
        if not sel.any():
            continue
        row = {
            "bin_nm": [lo, lo + 25],
            "n": int(sel.sum()),
            "residual_nm": float(np.median(residual[sel])),
            "target_nm": max(0.02 * (lo + 25), 1.0),
        }
        line = f"{lo:>4}-{lo + 25:<4} {row['n']:>3} {row['residual_nm']:>11.3g} "
        line += f"{row['target_nm']:>13.2g}"
        if crb is not None:
            row["crb_nm"] = float(np.median(crb[sel]))
            row["ratio"] = row["residual_nm"] / row["crb_nm"]
            line += f" {row['crb_nm']:>12.3g} {row['ratio']:>6.2f}"
        rows.append(row)
        print(line)
    rep = est.last_report
    kinds, counts = np.unique(rep.status, return_counts=True)
    statuses = {str(k): int(v) for k, v in zip(kinds, counts, strict=True)}
    print(f"{ms:.0f} ms per sample; statuses {statuses}; starts {np.bincount(rep.starts)[1:]}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    result = {"run": run, "data": data, "ms_per_sample": ms, "statuses": statuses, "bins": rows}
    out_path.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
