#!/usr/bin/env bash
# The main job on the embedded default: synthetic slide -> demo model -> export -> engine/ORT -> cells -> report.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export NUMBA_CACHE_DIR=${NUMBA_CACHE_DIR:-$PWD/.numba_cache}
exec .venv/bin/cellvit-trt demo "$@"
