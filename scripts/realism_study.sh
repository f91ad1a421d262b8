#!/usr/bin/env bash
# Frames the training never made: docs/realism.md's tables at 64 px on the CPU.
#
#   bash scripts/realism_study.sh [OUT]        # default OUT: studies/realism
#   BUDGET=12m N_TEST=60 bash scripts/realism_study.sh
#
# Two networks, the same PhENN (configs/recon/quickstart.yaml's widths), each trained for
# BUDGET of wall time on 4000 frames:
#   nominal:   Noll 2-36 on the nominal system (configs/sim/quick.yaml), as the quick start;
#   realistic: configs/sim/realistic.yaml (a blend of modes, screens and mixtures, 13 %
#              illumination per frame, dot and pupil tolerances), frames divided by
#              their clear frames (configs/recon/realistic.yaml).
# Held-out test sets (split test: no sample, screen or illumination map of training),
# N_TEST each, noiseless and at 1e7 photons (1 e- read noise):
#   modes (0-300 nm), mixture (modes + 20 nm beyond Noll 36, 0-500 nm),
#   screen (f^-2 screens, 0-300 nm), illum (modes with 13 % illumination per frame).
# Each evaluated as the network alone and + modal refinement (recon eval --refine), the
# noiseless sets + zonal refinement too (2-3 s per frame on 2 cores; the modal fit's
# restarts on frames beyond the modes cost as much); outputs:
# OUT/report_<set>_<p>_<modal|zonal>/report.{json,md}.
set -euo pipefail
shopt -s inherit_errexit  # a failed training inside $(...) stops the study
cd "$(dirname "$0")/.."
out=${1:-studies/realism}
budget=${BUDGET:-12m}
n_test=${N_TEST:-60}
mkdir -p "$out"
variant() { # name base-config key=value ...: a derived sim config in OUT
    local name=$1 base=$2; shift 2
    python3 - "$out/$name.yaml" "$base" "$@" <<'PY'
import sys, yaml
from common.config import config_file
path, base, *pairs = sys.argv[1:]
data = yaml.safe_load(config_file(base, "sim").read_text())
for pair in pairs:
    key, value = pair.split("=", 1)
    *parents, leaf = key.split(".")
    node = data
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = yaml.safe_load(value)
open(path, "w").write(yaml.safe_dump(data))
PY
}
gen() { # name config split n [sim options...]
    local name=$1 config=$2 split=$3 n=$4; shift 4
    [ -f "$out/$name.h5" ] || sim generate --config "$config" --split "$split" --n "$n" \
        --out "$out/$name.h5" "$@"
}
train() { # name config data val: trained once, then reused
    local name=$1 config=$2 data=$3 val=$4
    if [ ! -f "$out/runs/$name.done" ]; then
        rm -rf "$out/runs/$name"
        recon train --config "$config" --data "$data" --val "$val" --out "$out/runs/$name" \
            --budget "$budget" --no-progress >&2
        touch "$out/runs/$name.done"
    fi
    ls -d "$out/runs/$name"/*/ | head -1
}
variant illum quick pupil.amplitude_rms=0.13 pupil.amplitude_per_sample=true
gen train_nominal quick train 4000; gen val_nominal quick val 500
gen train_realistic realistic train 4000; gen val_realistic realistic val 500
nominal=$(train nominal quickstart "$out/train_nominal.h5" "$out/val_nominal.h5")
realistic=$(train realistic realistic "$out/train_realistic.h5" "$out/val_realistic.h5")
for p in none 1e7; do
    noise=(); [ "$p" = none ] || noise=(--photons "$p" --read-noise 1)
    gen "modes_$p" quick test "$n_test" --rms-max 300 "${noise[@]}"
    gen "mixture_$p" quick test "$n_test" --aberration mixture --rms-max 500 "${noise[@]}"
    gen "screen_$p" quick test "$n_test" --aberration screen --rms-max 300 "${noise[@]}"
    gen "illum_$p" "$out/illum.yaml" test "$n_test" --rms-max 300 "${noise[@]}"
    modes=(modal zonal); [ "$p" = none ] || modes=(modal)  # zonal: noiseless frames only
    for set in modes mixture screen illum; do
        for mode in "${modes[@]}"; do
            report="$out/report_${set}_${p}_${mode}"
            [ -f "$report/report.json" ] || recon eval "$nominal" "$realistic" \
                --name "nominal" --name "realistic" --refine "$mode" --no-zero-start \
                --data "$out/${set}_$p.h5" --out "$report"
        done
    done
done
python3 scripts/realism_tables.py "$out"
