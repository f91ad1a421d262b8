"""The refinement figure of the README: residual against true RMS, noiseless and noisy.

    python3 scripts/refinement_plot.py NOISELESS/report.json NOISY/report.json OUT.png

Each panel: analytic, network and network + refine (dots per sample, lines the medians
per 25 nm bin), the target max(0.02 x RMS, 1 nm), and on noisy data the median
Cramer-Rao bound. Residuals are clipped at 1e-4 nm for the log axis.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from recon.evaluation.metrics import bin_masks


def _medians(true: np.ndarray, y: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for k, m in enumerate(bin_masks(true, 25.0, n_bins)):
        if m.any():
            xs.append(25 * k + 12.5)
            ys.append(np.median(y[m]))
    return np.asarray(xs), np.asarray(ys)


def panel(ax: plt.Axes, report: Path) -> None:
    rep = json.loads(report.read_text())
    ps = rep["per_sample"]
    true = np.asarray(ps["true_rms_nm"])
    n_bins = int(np.ceil(true.max() / 25.0))
    for name, vals in ps["residual_rms_nm"].items():
        if name.startswith("zero") or name.startswith("analytic@1um +"):
            continue
        y = np.maximum(np.asarray(vals), 1e-4)
        col = "C0" if name.startswith("analytic") else ("C3" if name.endswith("refine") else "C1")
        ax.scatter(true, y, s=3, alpha=0.2, color=col)
        ax.plot(*_medians(true, y, n_bins), "-o", ms=3, color=col, label=name)
    if "crb_rms_nm" in ps:
        ax.plot(*_medians(true, np.asarray(ps["crb_rms_nm"]), n_bins), "k-", lw=2,
                label="Cramer-Rao bound (median)")  # fmt: skip
    x = np.linspace(0, 25 * n_bins, 200)
    ax.plot(x, np.maximum(0.02 * x, 1.0), "k--", lw=1, label="target max(0.02 x RMS, 1 nm)")
    cfg = rep["sim_config"]
    det = (json.loads(cfg) if isinstance(cfg, str) else cfg)["detector"]
    noise = (f"{det['photons']:.0e} photons, {det['read_noise_e']:g} e- read noise"
             if det.get("photons") else "noiseless")  # fmt: skip
    ax.set(yscale="log", xlabel="true OPD RMS [nm]",
           title=f"{rep['data']['npix']} px, {noise}, {true.size} samples")  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", type=Path, nargs="+", help="recon eval report.json files")
    parser.add_argument("--out", type=Path, default=Path("refinement_residual_vs_rms.png"))
    args = parser.parse_args()
    fig, axes = plt.subplots(1, len(args.reports), figsize=(6 * len(args.reports), 4.6),
                             constrained_layout=True, sharey=True, squeeze=False)  # fmt: skip
    for ax, report in zip(axes[0], args.reports, strict=True):
        panel(ax, report)
    axes[0][0].set_ylabel("residual RMS [nm] (clipped at 1e-4 nm)")
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
