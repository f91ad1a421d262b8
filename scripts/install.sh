#!/usr/bin/env bash
# Install the project and what it needs into the active Python environment.
# torch is chosen deliberately: an importable torch (e.g. a CUDA build) is kept;
# otherwise torch 2.13.0 is installed (a CPU build on the reference machine).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
extras=${1:-dev,dask,export,digits}  # test, Dask, ONNX and digits extras by default
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    echo "install.sh: no torch found; installing torch==2.13.0"
    "$PY" -m pip install -q "torch==2.13.0"
else
    echo "install.sh: keeping $("$PY" -c 'import torch; print("torch", torch.__version__)')"
fi
"$PY" -m pip install -q -e ".[${extras}]"
