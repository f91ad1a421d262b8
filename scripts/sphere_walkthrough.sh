#!/usr/bin/env bash
# docs/lab.md's walk-through: SPHERE's ZELDA from its system file, end to end on the CPU.
#
#   bash scripts/sphere_walkthrough.sh [OUT]        # default OUT: studies/sphere
#   BUDGET=8m bash scripts/sphere_walkthrough.sh
#
# 1. the system file (configs/sim/sphere_zelda.yaml, from pyZELDA's SPHERE-IRDIS.ini);
# 2. 4000 training and 400 validation frames of it (64 px, 1.642 um, 0-300 nm RMS);
# 3. the quick start's PhENN trained on them for BUDGET of wall time;
# 4. capture range on 300 held-out frames of 0-500 nm RMS (noiseless), the network alone
#    and refined (modal);
# 5. scripts/lab_check.py on the run: FITS frames in ADU at 1e7 photons, noise stated or
#    measured, and calibration from FITS frames of a dot 3 % narrow and 5 % deep.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
out=${1:-studies/sphere}
budget=${BUDGET:-8m}
mkdir -p "$out"
sim system sphere_zelda
gen() { # name split n [options]
    local name=$1 split=$2 n=$3; shift 3
    [ -f "$out/$name.h5" ] || sim generate --config sphere_zelda --split "$split" --n "$n" \
        --out "$out/$name.h5" --device cpu "$@"
}
gen train train 4000
gen val val 400
gen test test 300 --rms-max 500
if [ ! -f "$out/runs.done" ]; then
    rm -rf "$out/runs"
    recon train --config quickstart --data "$out/train.h5" --val "$out/val.h5" \
        --out "$out/runs" --budget "$budget" --no-progress
    touch "$out/runs.done"
fi
run=$(ls -d "$out"/runs/*/ | head -1)
[ -f "$out/report/report.json" ] || recon eval "$run" --data "$out/test.h5" --refine modal \
    --no-zero-start --name "PhENN (SPHERE)" --out "$out/report"
[ -f "$out/lab/lab_check.json" ] || python3 scripts/lab_check.py "$run" "$out/lab"
