#!/usr/bin/env bash
# Create .venv-upstream: upstream's own inference package, `cellvit==1.0.9`, installed WITH its declared
# dependencies (PathoPatcher, Ray, OpenCV 4.7, Shapely <= 2.0.5, ...) as a user would, for
# benchmarks/bench_e2e_vs_upstream.py. Separate from .venv on purpose: upstream pins numpy<2, pydantic<2 and
# an old OpenCV, which must not leak into the project's own environment. Benchmark only; CI never builds it.
#
#   bash benchmarks/upstream_env.sh            # a few minutes and ~6 GB the first time; a no-op afterwards
#
# Versions: benchmarks/upstream_constraints.txt (the pip freeze the RESULTS.md figures were measured with) is
# passed as constraints; CONSTRAINTS= (empty) lets pip resolve afresh. Without the file pip picks torch 2.12.1 +
# torchvision 0.27.1 (a CUDA 13 build, ~6 GB; it runs on the CPU here): upstream imports torchvision
# (cellvit/inference/inference.py: `transforms as T`), PathoPatcher declares torch and torchvision without a
# version but pins setuptools<=65.6.3, and torch >= 2.14 needs setuptools >= 77. The CPU-only torch 2.13.0 on
# this machine's disk has no matching torchvision on PyPI.
# libopenslide: PathoPatcher reads slides with openslide-python, which finds the library in `openslide-bin`.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${UPSTREAM_VENV:-.venv-upstream}
CONSTRAINTS=${CONSTRAINTS-benchmarks/upstream_constraints.txt}
CELLVIT_SPEC=${CELLVIT_SPEC:-cellvit==1.0.9}

stamp_src=$(printf '%s\n%s\n' "$CONSTRAINTS" "$CELLVIT_SPEC" | cat - benchmarks/upstream_env.sh ${CONSTRAINTS:+"$CONSTRAINTS"} \
  | sha256sum | cut -c1-16)
stamp="$VENV/.upstream-stamp"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$stamp_src" ] && [ -x "$VENV/bin/cellvit-inference" ]; then
  echo "$VENV is up to date" >&2
  exit 0
fi

echo "[upstream] creating $VENV with $CELLVIT_SPEC and its dependencies (one-time, a few minutes)" >&2
"$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
$PIP install "$CELLVIT_SPEC" openslide-bin ${CONSTRAINTS:+-c "$CONSTRAINTS"}
$VENV/bin/python -m pip freeze --disable-pip-version-check > "$VENV/freeze.txt"
# the import that fails first when a dependency is missing or mismatched: upstream's own inference module
$VENV/bin/python -c "import cellvit.inference.inference, pathopatch, ray, openslide, torchvision" >/dev/null
echo "$stamp_src" > "$stamp"
echo "[upstream] $VENV ready ($(grep -c . "$VENV/freeze.txt") packages, list in $VENV/freeze.txt)" >&2
