#!/usr/bin/env bash
# The main job on a small built-in default (64 px, CPU-friendly):
# simulate train/val/test sets, look at them, check the engine against POPPY,
# train the wavelength-recurrent GRU network on them, evaluate it against the
# classical (analytic) reconstruction on the test set.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${QUICKSTART_DIR:-quickstart}
mkdir -p "$out"
sim generate --config quick --n 1000 --split train --out "$out/train.h5" --overwrite
sim generate --config quick --n 200 --split val --out "$out/val.h5" --overwrite
sim generate --config quick --n 600 --split test --out "$out/test.h5" --overwrite
sim show "$out/train.h5" --out "$out/train.png"
sim check --config quick --rms 0,100,500
recon train --arch gru --config quick --epochs 3 --data "$out/train.h5" --val "$out/val.h5" --out "$out/runs"
run=$(ls -td "$out"/runs/gru-* | head -1)
recon eval "$run" --baseline analytic --data "$out/test.h5" --out "$out/report"
echo "quickstart: datasets, plots, the trained run and the evaluation report in $out/"
