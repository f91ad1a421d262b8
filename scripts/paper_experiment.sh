#!/usr/bin/env bash
# The experiment of Allan et al. (SPIE 2020): capture range of the analytic ZWFS
# reconstruction at 1.0 um, PhENN at 1.0 um, PhENN with four wavelengths and the
# wavelength-recurrent GRU with four wavelengths, on a 3000-sample test set of its own split.
#
#   bash scripts/paper_experiment.sh quick    # 64 px, small networks: CPU, tens of minutes
#   bash scripts/paper_experiment.sh full     # 128 px, 8000 training samples: a GPU
#
# Outputs in experiments/<scale>/: datasets, runs, and report/ (report.md, report.json, plots).
set -euo pipefail
cd "$(dirname "$0")/.."
scale=${1:-quick}
case "$scale" in
    quick) sim_cfg=quick; recon_phenn=quick; recon_gru=quick; n_train=${N_TRAIN:-2000}; device=auto ;;
    full)  sim_cfg=paper; recon_phenn=phenn; recon_gru=gru; n_train=${N_TRAIN:-8000}; device=auto ;;
    *) echo "usage: $0 quick|full" >&2; exit 2 ;;
esac
out=experiments/$scale
mkdir -p "$out"
gen() { # split n
    [ -f "$out/$1.h5" ] || sim generate --config "$sim_cfg" --split "$1" --n "$2" --out "$out/$1.h5" --device "$device"
}
gen train "$n_train"
gen val $((n_train / 8))
gen test 3000
train() { # name arch config [extra...]
    local name=$1 arch=$2 cfg=$3; shift 3
    if [ ! -f "$out/runs/$name.done" ]; then
        recon train --arch "$arch" --config "$cfg" --data "$out/train.h5" --val "$out/val.h5" \
            --out "$out/runs/$name" "$@" >&2
        touch "$out/runs/$name.done"
    fi
    ls -td "$out/runs/$name"/*/ | head -1
}
phenn1=$(train phenn-1um phenn "$recon_phenn" --wavelengths 1.0 | tail -1)
phenn4=$(train phenn-4wl phenn "$recon_phenn" | tail -1)
gru4=$(train gru-4wl gru "$recon_gru" | tail -1)
recon eval "$phenn1" "$phenn4" "$gru4" --baseline analytic --wavelength 1.0 \
    --data "$out/test.h5" --out "$out/report"
echo "paper experiment ($scale): $out/report/report.md"
