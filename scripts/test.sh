#!/usr/bin/env bash
# Run the whole test suite in the project's own environment (created on first use).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export NUMBA_CACHE_DIR=${NUMBA_CACHE_DIR:-$PWD/.numba_cache}
exec .venv/bin/python -m pytest "$@"
