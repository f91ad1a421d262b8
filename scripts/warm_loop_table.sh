#!/usr/bin/env bash
# docs/lab.md's frame-rate table: `recon loop --warm` at several steps per frame and
# Jacobian refreshes, batch 1, one thread (what a lab loop runs), on the quick system.
#
#   bash scripts/warm_loop_table.sh RUN [OUT]       # OUT default: studies/warm
#   SETTINGS="4:1 4:20" FRAMES=50 bash scripts/warm_loop_table.sh RUN   # steps:refresh
#
# RUN: a network run of the quick config (e.g. studies/refine_after/runs/phenn/*).
# FRAMES (default 200) frames of a Noll 2-36 random walk from 50 nm RMS, 10 nm RMS per frame, 1e7
# photons, 1 e- read noise.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
run=$1
out=${2:-studies/warm}
mkdir -p "$out"
[ -f "$out/system.h5" ] || sim generate --config quick --split test --n 2 \
    --out "$out/system.h5" --device cpu
for setting in ${SETTINGS:-1:1 3:1 4:1 3:20 4:5 4:20 5:20}; do  # steps:refresh
    IFS=: read -r steps refresh <<<"$setting"
    OMP_NUM_THREADS=1 recon loop "$run" --data "$out/system.h5" --warm --photons 1e7 \
        --read-noise 1 --frames "${FRAMES:-200}" --steps "$steps" --refresh "$refresh" \
        --out "$out/s${steps}_r${refresh}" >/dev/null
done
python3 - "$out" <<'PY'
import json, sys
from pathlib import Path
print("| steps | Jacobian every | latency median [ms] | mean [ms] | p95 [ms] | error/CRB median | max | reseeds |")
print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
reports = [json.loads(p.read_text()) for p in Path(sys.argv[1]).glob("s*_r*/warm_loop.json")]
for r in sorted(reports, key=lambda r: (r["steps"], r["refresh"])):
    s = r["summary"]
    print(f"| {r['steps']} | {r['refresh']} | {s['latency_median_ms']:.2f} | "
          f"{s['latency_mean_ms']:.2f} | {s['latency_p95_ms']:.2f} | {s['ratio_median']:.2f} | {s['ratio_max']:.2f} | "
          f"{s['reseeds']} |")
PY
