"""Why segment pistons of +-2 um are not phased in one shot: the reference wave.

    python scripts/phasing_probe.py TEST.h5 [--max-samples 64] [--out probe.json]

On a file with segment pistons (`sim generate --config segmented`), per sample:

1. the reference wave's collapse: the dot term D_l = T(E_in) at each wavelength,
   projected on the flat wavefront's d0_l (|beta_l|: 1 for a flat wavefront);
2. how much the frames hold once D is known: each segment's piston found alone by a
   grid search (10 nm steps over +-(range + 600) nm) that models the segment's pixels
   as |A e^(i k p) - D|^2, with (a) the true D and (b) beta_l d0_l, its projection;
3. the fraction of segments within 20, 50, 100 and 300 nm of the truth for each.

The grid search ignores the segments' tip, tilt and the global aberration: with the
true D it is a test of the information in the frames, not a reconstructor.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from recon.evaluation.testset import open_test_set
from sim.pupil import pupil_segments
from sim.zwfs import ZWFSModel

THRESHOLDS_NM = (20, 50, 100, 300)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--max-samples", type=int, default=64)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    with open_test_set(args.data) as ts:
        cfg = ts.sim_config().with_overrides(precision="complex128")
        n = min(ts.n, args.max_samples)
        frames = torch.as_tensor(np.asarray(ts.file["intensity"][:n], dtype=np.float64))
        opd = torch.as_tensor(np.asarray(ts.file["opd"][:n], dtype=np.float64))
        pistons = np.asarray(ts.file["segment_coefficients"][:n, :, 0], dtype=np.float64)
    engine = ZWFSModel(cfg)
    seg = pupil_segments(cfg.pupil)
    lit = torch.as_tensor(seg.transmission > 0)

    def dot_term(maps: torch.Tensor) -> torch.Tensor:
        t = engine.dot_operator(engine.input_field(maps), engine.dot_mix)
        return torch.complex(t[:, :, 0], t[:, :, 1])  # (B, L, N, N)

    with torch.no_grad():
        d_true = dot_term(opd)
        d0 = dot_term(torch.zeros(1, *opd.shape[1:], dtype=torch.float64))[0]
    beta = (d_true[..., lit] * d0[None, :, lit].conj()).sum(-1) / d0[:, lit].abs().square().sum(-1)
    d_beta = beta[..., None, None] * d0
    rel = (d_true - d_beta)[..., lit].abs().square().sum(-1) / d_true[..., lit].abs().square().sum(
        -1
    )
    span = float(np.abs(pistons).max()) + 600.0
    grid = torch.arange(-span, span + 1e-9, 10.0, dtype=torch.float64)
    lam_nm = torch.as_tensor(cfg.wavelengths_um, dtype=torch.float64) * 1e3
    phasors = torch.exp(2j * torch.pi * grid[None, :] / lam_nm[:, None])  # (L, G)
    amp = engine.amplitude
    index = torch.as_tensor(seg.index)
    out: dict[str, object] = {
        "data": str(args.data),
        "samples": n,
        "beta_abs_median_per_wavelength": beta.abs().median(0).values.tolist(),
        "beta_abs_range": [float(beta.abs().min()), float(beta.abs().max())],
        "dot_term_relative_error_of_beta_d0_median": float(rel.sqrt().median()),
    }
    for name, d in (("true D", d_true), ("beta d0", d_beta)):
        found = np.empty_like(pistons)
        for s in range(seg.count):
            on = index == s
            model = (amp[on] * phasors[..., None] - d[..., on][:, :, None, :]).abs().square()
            cost = (model - frames[..., on][:, :, None, :]).square().sum((1, 3))  # (B, G)
            found[:, s] = grid[cost.argmin(-1)].numpy()
        err = np.abs(found - pistons)
        out[name] = {f"within_{t}_nm": float(np.mean(err < t)) for t in THRESHOLDS_NM}
    print(json.dumps(out, indent=1))
    if args.out:
        args.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
