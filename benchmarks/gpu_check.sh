#!/usr/bin/env bash
# GPU check of the streaming runtime (< 5 min). Needs a CUDA GPU with PyTorch + cuda-python (+ Numba, OpenCV for
# the pipeline part; TensorRT optional). Uses the repository's own .venv when present, else python3.
# Writes $OUT/gpu_check.json when OUT is set.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=.venv/bin/python
export NUMBA_CACHE_DIR=${NUMBA_CACHE_DIR:-$PWD/.numba_cache}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c "import cuda.bindings" 2>/dev/null; then
  echo "cuda-python missing: trying pip install 'cuda-bindings>=12.9,<14'" >&2
  "$PY" -m pip install -q "cuda-bindings>=12.9,<14" >&2 || echo "could not install cuda-bindings" >&2
fi
timeout --signal=INT 295 "$PY" benchmarks/gpu_check.py
rc=$?
[ $rc -eq 124 ] && echo "gpu_check: timed out after 295 s" >&2
exit $rc
