#!/usr/bin/env bash
# The experiment of Allan et al. (SPIE 2020) within a wall-time budget: capture range of
# the analytic ZWFS reconstruction at 1.0 um, PhENN at 1.0 um, PhENN with four wavelengths
# and the wavelength-recurrent GRU with four wavelengths, on a test set of its own split.
#
#   bash scripts/paper_experiment.sh quick --budget 12m   # 64 px, CPU (configs/recon/quickstart.yaml)
#   bash scripts/paper_experiment.sh full --budget 2h     # 128 px, 8000 training samples: a GPU
#
# Three quarters of the budget go to the three trainings, in equal shares (each one
# `recon train --budget <share>`); the rest to simulation, start-up and evaluation.
# Without --budget the trainings run their configs' epochs. A training that finished is
# not run again (delete experiments/<scale>/runs/ to start over).
# Outputs in experiments/<scale>/ (or $EXPERIMENT_DIR): datasets, runs, and report/
# (report.md with the paper's ratios beside the measured ones, report.json, plots).
set -euo pipefail
cd "$(dirname "$0")/.."
usage() { echo "usage: $0 quick|full [--budget 12m]" >&2; exit 2; }
scale=${1:-quick}
shift || true
budget=""
while [ $# -gt 0 ]; do
    case "$1" in
        --budget) [ $# -ge 2 ] || usage; budget=$2; shift 2 ;;
        --budget=*) budget=${1#--budget=}; shift ;;
        *) usage ;;
    esac
done
case "$scale" in
    quick) sim_cfg=quick; recon_cfg=quickstart; n_train=${N_TRAIN:-4000}; n_test=${N_TEST:-1000} ;;
    full)  sim_cfg=paper; recon_cfg="";         n_train=${N_TRAIN:-8000}; n_test=${N_TEST:-3000} ;;
    *) usage ;;
esac
share=()
if [ -n "$budget" ]; then
    seconds=$(awk -v b="$budget" 'BEGIN {
        u = substr(b, length(b)); v = b; f = 1
        if (u == "s" || u == "m" || u == "h") { v = substr(b, 1, length(b) - 1); f = (u == "m") ? 60 : (u == "h") ? 3600 : 1 }
        if (v !~ /^[0-9]*\.?[0-9]+$/) exit 1
        print int(v * f) }') || { echo "--budget must be a duration such as 90s, 12m or 1.5h" >&2; exit 2; }
    share=(--budget "$((seconds * 3 / 4 / 3))s")
    echo "paper experiment ($scale): budget $budget; each of the three trainings gets ${share[1]}"
fi
out=${EXPERIMENT_DIR:-experiments/$scale}
mkdir -p "$out"
start=$SECONDS

# 1. Data: training, validation and test sets of their own splits (never the same samples).
gen() { # split n
    [ -f "$out/$1.h5" ] || sim generate --config "$sim_cfg" --split "$1" --n "$2" --out "$out/$1.h5"
}
gen train "$n_train"
gen val $((n_train / 8))
gen test "$n_test"

# 2. The three networks, one after another.
train() { # name arch [extra...]
    local name=$1 arch=$2; shift 2
    if [ ! -f "$out/runs/$name.done" ]; then
        recon train --arch "$arch" ${recon_cfg:+--config "$recon_cfg"} --data "$out/train.h5" \
            --val "$out/val.h5" --out "$out/runs/$name" --no-progress "${share[@]}" "$@" >&2
        touch "$out/runs/$name.done"
    fi
    ls -td "$out/runs/$name"/*/ | head -1
}
phenn1=$(train phenn-1um phenn --wavelengths 1.0 | tail -1)
phenn4=$(train phenn-4wl phenn | tail -1)
gru4=$(train gru-4wl gru | tail -1)

# 3. Side by side on the test set; the ratios divide by the analytic capture range.
names=(--name "PhENN 1 wl" --name "PhENN 4 wl" --name "GRU 4 wl")
recon eval "$phenn1" "$phenn4" "$gru4" "${names[@]}" --baseline analytic --wavelength 1.0 \
    --data "$out/test.h5" --out "$out/report"
# The same with each estimate refined by a modal fit of the frames with the engine, where
# this recon has --refine; the fits are slow on a CPU, so on the first $REFINE_N samples.
refined=""
eval_help=$(recon eval --help 2>/dev/null || true)  # no pipe into grep -q: pipefail + SIGPIPE
if [[ $eval_help == *--refine* ]]; then
    recon eval "$phenn1" "$phenn4" "$gru4" "${names[@]}" --baseline analytic \
        --wavelength 1.0 --refine modal --max-samples "${REFINE_N:-100}" \
        --data "$out/test.h5" --out "$out/report_refined"
    refined="$out/report_refined"
fi

# 4. The paper's ratios beside the measured ones.
python3 - "$out/report" "$scale" "$budget" "$((SECONDS - start))" "$refined" <<'PY'
import json
import sys
from pathlib import Path

folder, scale, budget, wall = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
report = json.loads((folder / "report.json").read_text())
rows = list(report["estimators"].items())
if sys.argv[5]:  # the refined report: its own rows, on fewer samples
    refined = json.loads((Path(sys.argv[5]) / "report.json").read_text())
    n_ref = refined["data"]["n_samples"]
    rows += [
        (f"{name} ({n_ref} samples)", e)
        for name, e in refined["estimators"].items()
        if name not in report["estimators"]
    ]
paper = {"PhENN 1 wl": 3.4, "PhENN 4 wl": 4.5}  # Allan et al. (SPIE 2020)
lines = [
    "",
    "## Against the paper",
    "",
    f"Scale `{scale}`, budget {budget or 'none (config epochs)'}, {wall / 60:.1f} min of wall "
    f"time for this script; {report['data']['n_samples']} test samples.",
    "",
    "| estimator | capture range (nm) | measured ratio to analytic | paper's ratio |",
    "| --- | ---: | ---: | ---: |",
]
for name, e in rows:
    ratio = e["ratio_to_analytic"]
    ref = paper.get(name)
    lines.append(
        f"| {name} | {e['capture_range_nm']:.0f} | "
        f"{'-' if ratio is None else f'{ratio:.1f}x'} | {'-' if ref is None else f'{ref}x'} |"
    )
text = "\n".join(lines) + "\n"
with open(folder / "report.md", "a") as f:
    f.write(text)
print(text)
PY
echo "paper experiment ($scale): $out/report/report.md ($(((SECONDS - start) / 60)) min)"
