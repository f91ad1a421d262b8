"""The picture of docs/segmented.md: pupil, frames, truth, estimates and residual.

    python scripts/segmented_figure.py TEST.h5 [--run RUN_DIR] [--sample K] \
        [--out docs/images/segmented.png]

One test sample: the pupil with its segment numbers, the frame at each wavelength, the
true OPD, the network's estimate (when --run is given) and the refined one, and the
refined residual, each with its RMS [nm] and the largest segment piston error.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from recon.evaluation.metrics import segment_piston_errors
from recon.evaluation.testset import open_test_set
from recon.refine.estimator import RefinedEstimator, ZeroEstimator
from sim.pupil import pupil_segments
from sim.segments import segment_means_weights


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--run", type=Path, default=None, help="a trained run: the start")
    ap.add_argument("--sample", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("docs/images/segmented.png"))
    args = ap.parse_args()
    with open_test_set(args.data) as ts:
        cfg = ts.sim_config()
        k = args.sample
        frames = np.asarray(ts.file["intensity"][k : k + 1], dtype=np.float32)
        truth = np.asarray(ts.file["opd"][k], dtype=np.float64)
        wavelengths_m = ts.wavelengths_m
    if args.run is not None:
        from recon.estimators.network import NetworkEstimator

        base = NetworkEstimator.from_checkpoint(args.run)
    else:
        base = ZeroEstimator(cfg)
    refined = RefinedEstimator(base, cfg)
    first = base.estimate(frames, wavelengths_m)[0]
    final = refined.estimate(frames, wavelengths_m)[0]
    seg = pupil_segments(cfg.pupil)
    lit = seg.transmission > 0
    weights = segment_means_weights(cfg)

    def shown(opd: np.ndarray) -> np.ndarray:
        return np.where(lit, opd - opd[lit].mean(), np.nan)

    def label(name: str, opd: np.ndarray) -> str:
        d = opd - truth
        rms = np.std(d[lit])
        piston = np.abs(segment_piston_errors(d[None], weights)).max()
        return f"{name}\nresidual {rms:.3g} nm RMS, pistons <= {piston:.3g} nm"

    n_wl = frames.shape[1]
    cols = max(n_wl + 1, 4)
    fig, axes = plt.subplots(2, cols, figsize=(3.1 * cols, 6.4))
    for ax in axes.flat:
        ax.set_axis_off()
    ax = axes[0, 0]
    ax.imshow(seg.transmission, cmap="gray", origin="lower")
    for s, (cx, cy) in enumerate(seg.centres_px):
        n = cfg.pupil.npix
        ax.text(cx + (n - 1) / 2, cy + (n - 1) / 2, str(s), ha="center", va="center", color="C1")
    ax.set_title(f"pupil: {seg.count} segments")
    for li in range(n_wl):
        ax = axes[0, li + 1]
        ax.imshow(frames[0, li], cmap="magma", origin="lower")
        ax.set_title(f"frame at {wavelengths_m[li] * 1e6:.2f} um")
    start = "network" if args.run is not None else "flat start"
    maps = [("true OPD [nm]", truth), (label(start, first), first)]
    maps += [(label("refined", final), final), ("refined - true [nm]", final - truth)]
    lim = np.nanmax(np.abs(shown(truth)))
    for ax, (title, opd) in zip(axes[1], maps, strict=False):
        residual = title.startswith("refined -")
        vmax = max(np.nanmax(np.abs(shown(opd))), 1e-6) if residual else lim
        im = ax.imshow(shown(opd), cmap="RdBu_r", vmin=-vmax, vmax=vmax, origin="lower")
        ax.set_title(title, fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(f"{args.data.name}, sample {k}")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
