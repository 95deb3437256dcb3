#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv with everything the demo and the tests need:
# the package in editable mode with its export/slides/bench/dev/serve/ray extras, a CPU PyTorch, and the upstream
# cellvit==1.0.9 package as a test-only oracle (installed without its dependencies, as the reference says).
# Re-running is cheap: a stamp of the requirement files skips the install when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
# On this project's machines torch 2.13.0 (CPU build) lies on disk; elsewhere set TORCH_SPEC, e.g. to a CPU wheel URL.
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

stamp_src=$(cat pyproject.toml tests/requirements-oracle.txt scripts/setup_env.sh | sha256sum | cut -c1-16)
stamp="$VENV/.cellvit-trt-stamp"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$stamp_src" ] && [ -x "$VENV/bin/cellvit-trt" ]; then
  exit 0
fi

echo "[setup] creating $VENV (one-time, a few minutes)" >&2
"$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
$PIP install --upgrade pip >/dev/null
$PIP install "$TORCH_SPEC"
$PIP install -r tests/requirements-oracle.txt -e ".[export,slides,bench,dev,serve,ray]"
$PIP install --no-deps "cellvit==1.0.9"
echo "$stamp_src" > "$stamp"
echo "[setup] $VENV ready" >&2
