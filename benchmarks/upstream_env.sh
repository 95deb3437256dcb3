#!/usr/bin/env bash
# Create .venv-upstream: upstream's own inference package, `cellvit==1.0.9`, installed WITH its declared
# dependencies (PathoPatcher, Ray, OpenCV 4.7, Shapely <= 2.0.5, ...) as a user would, for
# benchmarks/bench_e2e_vs_upstream.py. Separate from .venv on purpose: upstream pins numpy<2, pydantic<2 and
# an old OpenCV, which must not leak into the project's own environment. Benchmark only; CI never builds it.
#
#   bash benchmarks/upstream_env.sh            # a few minutes and ~6 GB the first time; a no-op afterwards
#
# torch/torchvision: upstream imports torchvision (cellvit/inference/inference.py: `transforms as T`) and
# PathoPatcher declares both without a version. A torchvision needs the torch it was built against; on this
# project's machines torch 2.14.1 + torchvision 0.29.1 are the matching pair on disk (a CUDA build; it runs on
# the CPU here). Elsewhere set TORCH_SPEC to any matching pair, e.g. a CPU build from the PyTorch index.
# libopenslide: PathoPatcher reads slides with openslide-python, which finds the library in `openslide-bin`.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${UPSTREAM_VENV:-.venv-upstream}
TORCH_SPEC=${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}
CELLVIT_SPEC=${CELLVIT_SPEC:-cellvit==1.0.9}

stamp_src=$(printf '%s\n%s\n' "$TORCH_SPEC" "$CELLVIT_SPEC" | cat - benchmarks/upstream_env.sh | sha256sum | cut -c1-16)
stamp="$VENV/.upstream-stamp"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$stamp_src" ] && [ -x "$VENV/bin/cellvit-inference" ]; then
  echo "$VENV is up to date" >&2
  exit 0
fi

echo "[upstream] creating $VENV with $CELLVIT_SPEC and its dependencies (one-time, a few minutes)" >&2
"$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
# torch first, so that the unversioned torch/torchvision of PathoPatcher are already satisfied
# shellcheck disable=SC2086 # TORCH_SPEC is a list of requirements
$PIP install $TORCH_SPEC
$PIP install "$CELLVIT_SPEC" openslide-bin
$VENV/bin/python -m pip freeze --disable-pip-version-check > "$VENV/freeze.txt"
# the import that fails first when a dependency is missing or mismatched: upstream's own inference module
$VENV/bin/python -c "import cellvit.inference.inference, pathopatch, ray, openslide, torchvision" >/dev/null
echo "$stamp_src" > "$stamp"
echo "[upstream] $VENV ready ($(grep -c . "$VENV/freeze.txt") packages, list in $VENV/freeze.txt)" >&2
