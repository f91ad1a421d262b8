#!/usr/bin/env bash
# Every GPU figure in one run (see scripts/gpu_bench.py): bash scripts/gpu_bench.sh [--smoke]
# Writes bench/gpu_bench/gpu_bench.json and gpu_bench.md. No network access needed.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 scripts/gpu_bench.py "$@"
