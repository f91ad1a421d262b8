#!/usr/bin/env bash
# The studies of docs/results.md at 64 px on the CPU, one short training after another.
#
#   bash scripts/studies.sh [a|b|c|d|e ...]   # default: a b c d
#
# Trainings of a, b and d are equal in optimiser steps (EPOCHS=12: 3000 steps of 16 samples,
# about 6 minutes each on 2 idle cores), so other jobs on the machine change their wall
# time, not their result. Study c compares at equal wall time (BUDGET=6m per training).
#
# a: capture range and residual against the number and choice of wavelengths (1, 2, 3, 4)
# b: the RMS range extended to 0-1000 nm in training and test
# c: GRU against PhENN at equal training time and at equal parameters
# d: every network of a and c at 1e6, 1e7, 1e8 photons (1 e- read noise; trained noise-free)
# e: a U-Net from every registered block at the FLOPs of the residual one (widths scaled by
#    scripts/block_study.py), EPOCHS_E=6 (1500 steps) each; latency and training ms/sample
#    benchmarked after; table and Pareto plot (docs/images/study_e_pareto.png)
# Outputs in $STUDY_DIR (default studies/): datasets, runs, one report per study; the
# residual-against-RMS plots are copied to docs/images/study_<x>.png.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${STUDY_DIR:-studies}
budget=${BUDGET:-6m}        # study c: wall time per training
epochs=${EPOCHS:-12}        # studies a, b, d: epochs of 250 steps per training
epochs_e=${EPOCHS_E:-6}     # study e: epochs per block (14 trainings)
n_test=${N_TEST:-1000}      # test samples per evaluation (study d: half of them)
studies=("${@:-a b c d}")
studies=(${studies[*]})
mkdir -p "$out" docs/images
say() { printf '\n== %s\n' "$*"; }
gen() { # name split n [sim options...]
    local name=$1 split=$2 n=$3; shift 3
    [ -f "$out/$name.h5" ] || sim generate --config quick --split "$split" --n "$n" \
        --out "$out/$name.h5" "$@"
}
train() { # name [recon train options...]: trained once, then reused; equal steps
    local name=$1; shift
    if [ ! -f "$out/runs/$name.done" ]; then
        rm -rf "$out/runs/$name"
        recon train --config quickstart --out "$out/runs/$name" --epochs "$epochs" \
            --no-progress "$@" >&2
        touch "$out/runs/$name.done"
    fi
    ls -d "$out/runs/$name"/*/ | head -1
}
report() { # study test-file [recon eval arguments...]
    local study=$1 test=$2; shift 2
    recon eval "$@" --baseline analytic --wavelength 1.0 --data "$test" --out "$out/report_$study" \
        --max-samples "$n_test"
    cp "$out/report_$study/residual_vs_rms.png" "docs/images/study_$study.png"
}
# the GRU with as many parameters as the PhENN of configs/recon/quickstart.yaml (0.59 M
# against 0.56 M: recurrent_scales 1)
sed 's/widths: \[8, 16, 32, 64\]$/widths: [8, 16, 32, 48, 88]/' \
    "$(python3 -c 'from common.config import config_file; print(config_file("quickstart", "recon"))')" \
    > "$out/gru_equal_params.yaml"
d500=(--data "$out/train.h5" --val "$out/val.h5")
gen train train 4000; gen val val 500; gen test test 1000    # 0-500 nm, no noise

for s in "${studies[@]}"; do case $s in
a)  say "a: wavelengths"
    report a "$out/test.h5" \
        "$(train wl-1.0 "${d500[@]}" --wavelengths 1.0)" --name "1.0" \
        "$(train wl-0.98,1.0 "${d500[@]}" --wavelengths 0.98,1.0)" --name "0.98, 1.0" \
        "$(train wl-1.0,1.2 "${d500[@]}" --wavelengths 1.0,1.2)" --name "1.0, 1.2" \
        "$(train wl-0.96,0.98,1.0 "${d500[@]}" --wavelengths 0.96,0.98,1.0)" --name "0.96, 0.98, 1.0" \
        "$(train wl-all "${d500[@]}")" --name "0.96, 0.98, 1.0, 1.2" ;;
b)  say "b: 0-1000 nm RMS in training and test"
    gen train1000 train 4000 --rms-max 1000; gen val1000 val 500 --rms-max 1000
    gen test1000 test 1000 --rms-max 1000
    report b "$out/test1000.h5" \
        "$(train rms1000 --data "$out/train1000.h5" --val "$out/val1000.h5")" --name "PhENN 4 wl, 0-1000 nm" \
        "$(train wl-all "${d500[@]}")" --name "PhENN 4 wl, 0-500 nm" ;;
c)  say "c: GRU against PhENN at equal wall time ($budget each)"
    timed=(--epochs 1000 --budget "$budget")   # the budget stops them; the schedule follows it
    report c "$out/test.h5" \
        "$(train phenn-time "${d500[@]}" "${timed[@]}")" --name "PhENN 4 wl (0.56 M)" \
        "$(train gru "${d500[@]}" --arch gru "${timed[@]}")" --name "GRU 4 wl (0.21 M), equal time" \
        "$(train gru-eqp "${d500[@]}" --arch gru --config "$out/gru_equal_params.yaml" \
            "${timed[@]}")" --name "GRU 4 wl (0.59 M), equal time and parameters" ;;
d)  say "d: photon noise (1 e- read noise) on networks trained without noise"
    for p in 1e6 1e7 1e8; do
        gen "test_p$p" test $((n_test / 2)) --photons "$p" --read-noise 1
        n_test=$((n_test / 2)) report "d_$p" "$out/test_p$p.h5" \
            "$(train wl-1.0 "${d500[@]}" --wavelengths 1.0)" --name "PhENN 1 wl" \
            "$(train wl-all "${d500[@]}")" --name "PhENN 4 wl" \
            "$(train gru "${d500[@]}" --arch gru)" --name "GRU 4 wl" \
            "$(train gru-eqp "${d500[@]}" --arch gru --config "$out/gru_equal_params.yaml")" \
            --name "GRU 4 wl (0.59 M)"
    done ;;
e)  say "e: U-Nets from every block at the residual U-Net's FLOPs ($epochs_e epochs each)"
    python3 scripts/block_study.py configs --out "$out"
    saved=$epochs; epochs=$epochs_e; runs=()
    for cfg in "$out"/block_*.yaml; do
        b=$(basename "$cfg" .yaml); b=${b#block_}
        runs+=("$(train "block-$b" "${d500[@]}" --config "$cfg")" --name "$b")
    done
    epochs=$saved
    report e "$out/test.h5" "${runs[@]}"
    python3 scripts/block_study.py bench --out "$out"
    python3 scripts/block_study.py table --out "$out" | tee "$out/study_e.md" ;;
*)  echo "unknown study $s (a, b, c, d or e)" >&2; exit 2 ;;
esac; done
say "reports: $out/report_*/report.md; plots: docs/images/study_*.png"
