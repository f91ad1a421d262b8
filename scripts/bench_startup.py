"""Start-up benchmark: wall time of `sim --help`, `recon --help`, a one-sample
`sim generate` and `python -c "import torch"`, each run several times in fresh processes
(median and min), alternating so that a busy machine slows them alike.

    python3 scripts/bench_startup.py [--repeats 5] [--out bench/startup.json]

The commands run as `python -c "from sim.cli import app; app()" ...` on this checkout
(PYTHONPATH), the way the installed entry points call them, without the shell shim
(pyenv's adds its own ~0.1 s). Targets: the two --help at most 0.3 s; `sim generate
--config quick --n 1` at most 1.3x `import torch` (nothing but its own work on top).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GENERATE = "sim generate --config quick --n 1"
TORCH = 'python -c "import torch"'
TARGETS = {"sim --help": (0.3, "s"), "recon --help": (0.3, "s"), GENERATE: (1.3, TORCH)}


def _time(cmd: list[str], cwd: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, env=env)
    return time.perf_counter() - start


def _cli(module: str, *args: str) -> list[str]:
    return [sys.executable, "-c", f"from {module} import app; app()", *args]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("bench/startup.json"))
    args = parser.parse_args()
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        commands = {
            "sim --help": _cli("sim.cli", "--help"),
            "recon --help": _cli("recon.cli", "--help"),
            GENERATE: _cli(
                "sim.cli", "generate", "--config", "quick", "--n", "1", "--out", "one.h5",
                "--overwrite", "--device", "cpu",
            ),
            TORCH: [sys.executable, "-c", "import torch"],
            'python -c "pass"': [sys.executable, "-c", "pass"],  # the interpreter alone
        }  # fmt: skip
        for cmd in commands.values():
            _time(cmd, tmp)  # warm the file cache
        for _ in range(args.repeats):
            for name, cmd in commands.items():
                times.setdefault(name, []).append(_time(cmd, tmp))
    median = {name: statistics.median(t) for name, t in times.items()}
    rows = []
    for name, t in times.items():
        limit, unit = TARGETS.get(name, (None, None))
        value = median[name] if unit == "s" else median[name] / median.get(unit or "", 1.0)
        rows.append(
            {
                "command": name,
                "median_s": median[name],
                "min_s": min(t),
                "target": None if limit is None else f"<= {limit} {'s' if unit == 's' else 'x'}",
                "value": None if limit is None else value,
                "met": None if limit is None else value <= limit,
            }
        )
    print(f"{'command':36s} {'median [s]':>10s} {'min [s]':>8s}  {'target':>9s} {'value':>6s}  met")
    for r in rows:
        target = r["target"] or ""
        value = "" if r["value"] is None else f"{r['value']:.2f}"
        met = "" if r["met"] is None else ("yes" if r["met"] else "NO")
        print(
            f"{r['command']:36s} {r['median_s']:10.3f} {r['min_s']:8.3f}  {target:>9s} "
            f"{value:>6s}  {met}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"cpus": os.cpu_count(), "python": sys.version.split()[0], "machine": platform.node()}
    args.out.write_text(json.dumps({"rows": rows, **meta}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
