"""The tables of docs/realism.md from the reports of scripts/realism_study.sh.

    python3 scripts/realism_tables.py studies/realism     # -> studies/realism/tables.md

Per test set and photon level: the median residual [nm] per 25 nm bin of true RMS for
each network alone, + modal and (noiseless sets) + zonal refinement, and a summary (capture range,
strict capture range, median residual, ms/sample, fit statuses). Tables fit 80 columns.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SETS = {
    "modes": "Noll 2-36, 0-300 nm (as trained by the nominal network)",
    "mixture": "Noll 2-36 + 20 nm RMS beyond Noll 36, 0-500 nm",
    "screen": "f^-2 power-law screens, 0-300 nm",
    "illum": "Noll 2-36 with 13 % RMS illumination per frame, clear frames given",
}
NETS = ("nominal", "realistic")


def _load(folder: Path, name: str) -> dict | None:
    path = folder / name / "report.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _bins(report: dict, label: str) -> dict[float, tuple[int, float]]:
    bins = report["estimators"][label]["capture_range"]["bins"]
    return {b["lo_nm"]: (b["count"], b["median_residual_nm"]) for b in bins if b["count"]}


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2g}" if value < 0.1 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def table(folder: Path, name: str, photons: str) -> list[str]:
    modal = _load(folder, f"report_{name}_{photons}_modal")
    zonal = _load(folder, f"report_{name}_{photons}_zonal")
    if modal is None:
        return [f"(no report for {name} at {photons})", ""]
    cols = []  # (header, per-bin dict, summary entry)
    for net in NETS:
        runs = [(net[:4], modal, net), (f"{net[:4]}+m", modal, f"{net} + refine")]
        if zonal is not None:  # noiseless sets only (scripts/realism_study.sh)
            runs.append((f"{net[:4]}+z", zonal, f"{net} + refine (zonal)"))
        for head, rep, label in runs:
            cols.append((head, _bins(rep, label), rep["estimators"][label]))
    level = "noiseless" if photons == "none" else f"{photons} photons, 1 e- read noise"
    lines = [f"**{SETS[name]}; {level}** (median residual [nm] per bin):", ""]
    lines.append("| bin (nm) | n | " + " | ".join(h for h, _, _ in cols) + " |")
    lines.append("| --- | ---: | " + " | ".join("---:" for _ in cols) + " |")
    for lo in sorted(cols[0][1]):
        n = cols[0][1][lo][0]
        cells = " | ".join(_fmt(c[1].get(lo, (0, None))[1]) for c in cols)
        lines.append(f"| {lo:.0f}-{lo + 25:.0f} | {n} | {cells} |")
    lines += [
        "",
        "| estimator | capture | strict | median nm | ms/sample |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for head, _, est in cols:
        s = est["summary"]
        lines.append(
            f"| {head} | {est['capture_range_nm']:.0f} | {est['capture_range_strict_nm']:.0f} | "
            f"{_fmt(s['median_residual_nm'])} | {s['ms_per_sample']:.0f} |"
        )
    statuses = [
        f"{head}: "
        + ", ".join(f"{v} {k}" for k, v in est["summary"]["fit_status_counts"].items() if v)
        for head, _, est in cols
        if "fit_status_counts" in est["summary"]
    ]
    lines += ["", "Fit statuses: " + "; ".join(statuses) + ".", ""]
    return lines


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "studies/realism")
    lines = []
    for photons in ("none", "1e7"):
        for name in SETS:
            lines += table(folder, name, photons)
    out = folder / "tables.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
