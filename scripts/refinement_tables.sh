#!/usr/bin/env bash
# The refinement tables of docs/refinement.md (noiseless and 1e6 photons), at 64 px on the CPU.
#
#   bash scripts/refinement_tables.sh [OUT]      # default OUT: studies/refine
#
# Datasets and the two start networks are made once and reused, so the evaluations can be
# rerun on other code (before and after a change) against the same frames and starts.
# Both networks train for equal optimiser steps (12 epochs of 250 steps of 16 samples,
# about 6 minutes each on 2 idle cores), so other jobs change their wall time only.
#   noise-free PhENN: quickstart config on noiseless frames, 0-500 nm, Noll 2-36;
#   PhENN at 1e6:     the same on frames at 1e6 photons and 1 e- read noise.
# Evaluations: report.json and report.md in OUT/eval_<name>/ (EVAL_TAG renames them).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-studies/refine}
tag=${EVAL_TAG:-}
mkdir -p "$out"
gen() { # name split n [sim options...]
    local name=$1 split=$2 n=$3; shift 3
    [ -f "$out/$name.h5" ] || sim generate --config quick --split "$split" --n "$n" \
        --out "$out/$name.h5" "$@"
}
train() { # name [recon train options...]: trained once, then reused
    local name=$1; shift
    if [ ! -f "$out/runs/$name.done" ]; then
        rm -rf "$out/runs/$name"
        recon train --config quickstart --out "$out/runs/$name" --epochs 12 --no-progress "$@" >&2
        touch "$out/runs/$name.done"
    fi
    ls -d "$out/runs/$name"/*/ | head -1
}
noisy=(--photons 1e6 --read-noise 1)
gen train train 4000; gen val val 500; gen test test 600
gen train_p1e6 train 4000 "${noisy[@]}"; gen val_p1e6 val 500 "${noisy[@]}"
gen test_p1e6 test 500 "${noisy[@]}"
run=$(train phenn --data "$out/train.h5" --val "$out/val.h5")
nrun=$(train phenn-1e6 --data "$out/train_p1e6.h5" --val "$out/val_p1e6.h5")
recon eval "$run" --name "PhENN 4 wl" --baseline analytic --wavelength 1.0 --refine modal \
    --data "$out/test.h5" --out "$out/eval_noiseless$tag"
recon eval "$run" --name "PhENN 4 wl" --refine modal --data "$out/test_p1e6.h5" \
    --out "$out/eval_p1e6$tag"
recon eval "$nrun" --name "PhENN 4 wl, trained at 1e6" --refine modal \
    --data "$out/test_p1e6.h5" --out "$out/eval_noisytrained_p1e6$tag"
