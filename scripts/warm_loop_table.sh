#!/usr/bin/env bash
# docs/lab.md's frame-rate table: `recon loop --warm` at several steps per frame and
# Jacobian refreshes, batch 1, one thread (what a lab loop runs), on the quick system.
#
#   bash scripts/warm_loop_table.sh RUN [OUT]       # OUT default: studies/warm
#
# RUN: a network run of the quick config (e.g. studies/refine_after/runs/phenn/*).
# 50 frames of a Noll 2-36 random walk from 50 nm RMS, 10 nm RMS per frame, 1e7
# photons, 1 e- read noise.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
run=$1
out=${2:-studies/warm}
mkdir -p "$out"
[ -f "$out/system.h5" ] || sim generate --config quick --split test --n 2 \
    --out "$out/system.h5" --device cpu
for setting in "1 1" "2 1" "3 1" "3 5" "5 1"; do
    read -r steps refresh <<<"$setting"
    OMP_NUM_THREADS=1 recon loop "$run" --data "$out/system.h5" --warm --photons 1e7 \
        --read-noise 1 --frames 50 --steps "$steps" --refresh "$refresh" \
        --out "$out/s${steps}_r${refresh}" >/dev/null
done
python3 - "$out" <<'PY'
import json, sys
from pathlib import Path
print("| steps | Jacobian every | latency median [ms] | p95 [ms] | error/CRB median | max | reseeds |")
print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for path in sorted(Path(sys.argv[1]).glob("s*_r*/warm_loop.json")):
    r = json.loads(path.read_text()); s = r["summary"]
    print(f"| {r['steps']} | {r['refresh']} | {s['latency_median_ms']:.2f} | "
          f"{s['latency_p95_ms']:.2f} | {s['ratio_median']:.2f} | {s['ratio_max']:.2f} | "
          f"{s['reseeds']} |")
PY
