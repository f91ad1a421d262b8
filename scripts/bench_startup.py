"""Start-up benchmark: wall time of `sim --help`, `recon --help` and a one-sample
`sim generate`, each run several times in fresh processes (median and min).

    python3 scripts/bench_startup.py [--repeats 5] [--out bench/startup.json]

Targets: the two --help under 0.5 s, `sim generate --config quick --n 1`
under 2.5 s on the 2-core machine.
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

TARGETS_S = {"sim --help": 0.5, "recon --help": 0.5, "sim generate --config quick --n 1": 2.5}


def _time(cmd: list[str], cwd: str) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("bench/startup.json"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        commands = {
            "sim --help": ["sim", "--help"],
            "recon --help": ["recon", "--help"],
            "sim generate --config quick --n 1": [
                "sim", "generate", "--config", "quick", "--n", "1", "--out", "one.h5",
                "--overwrite", "--device", "cpu",
            ],
        }  # fmt: skip
        for name, cmd in commands.items():
            _time(cmd, tmp)  # warm the file cache
            times = [_time(cmd, tmp) for _ in range(args.repeats)]
            rows.append(
                {
                    "command": name,
                    "median_s": statistics.median(times),
                    "min_s": min(times),
                    "target_s": TARGETS_S[name],
                    "met": statistics.median(times) <= TARGETS_S[name],
                }
            )
    print(f"{'command':40s} {'median [s]':>11s} {'min [s]':>8s} {'target [s]':>11s}  met")
    for r in rows:
        print(
            f"{r['command']:40s} {r['median_s']:11.3f} {r['min_s']:8.3f} "
            f"{r['target_s']:11.1f}  {'yes' if r['met'] else 'NO'}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"cpus": os.cpu_count(), "python": sys.version.split()[0], "machine": platform.node()}
    args.out.write_text(json.dumps({"rows": rows, **meta}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
