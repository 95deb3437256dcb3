#!/usr/bin/env bash
# GPU check (one prepared script, < 5 min). Needs a CUDA GPU with PyTorch + cuda-python (+ Numba, OpenCV for
# the pipeline part); TensorRT optional (its parts are skipped, with a line saying so, where it is absent).
#   1. pytest -m "gpu or tensorrt": the real-hardware tests (engine builds and parity, both GPU backends)
#   2. benchmarks/gpu_check.py: demo-model engines FP32/FP16/INT8 through the export gate against ONNX Runtime,
#      with and without CUDA graphs and zero-copy; tiles/s, copy/compute overlap, GPU busy fraction
# Uses the repository's own .venv when present, else python3. Writes $OUT/gpu_pytest.txt and
# $OUT/gpu_check.json when OUT is set. Exit 0 only when both steps pass.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=.venv/bin/python
export NUMBA_CACHE_DIR=${NUMBA_CACHE_DIR:-$PWD/.numba_cache}
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
TOTAL=285
START=$(date +%s)
if ! "$PY" -c "import cuda.bindings" 2>/dev/null; then
  echo "cuda-python missing: trying pip install 'cuda-bindings>=12.9,<14'" >&2
  timeout 60 "$PY" -m pip install -q "cuda-bindings>=12.9,<14" >&2 || echo "could not install cuda-bindings" >&2
fi
"$PY" -c "import tensorrt" 2>/dev/null || echo "TensorRT is not installed: its tests and engine parts will be SKIPPED"
LOG=${OUT:-$(mktemp -d)}
mkdir -p "$LOG"

echo "== 1/2 pytest -m 'gpu or tensorrt' (at most 150 s)"
timeout --signal=INT 150 "$PY" -m pytest -m "gpu or tensorrt" -q -rs -p no:cacheprovider tests 2>&1 | tee "$LOG/gpu_pytest.txt"
prc=${PIPESTATUS[0]}
case $prc in
  0) ;;
  5) echo "pytest: no gpu/tensorrt test was selected"; prc=0 ;;
  124) echo "pytest: timed out after 150 s" ;;
  *) echo "pytest: failed (exit $prc)" ;;
esac

LEFT=$(( TOTAL - ($(date +%s) - START) ))
echo "== 2/2 benchmarks/gpu_check.py ($LEFT s left)"
if [ "$LEFT" -lt 30 ]; then
  echo "gpu_check.py: skipped, the time budget is spent"
  exit 1
fi
GPU_CHECK_BUDGET_S=$(( LEFT - 10 )) timeout --signal=INT "$LEFT" "$PY" benchmarks/gpu_check.py
rc=$?
[ $rc -eq 124 ] && echo "gpu_check.py: timed out" >&2
[ $prc -ne 0 ] && exit $prc
exit $rc
