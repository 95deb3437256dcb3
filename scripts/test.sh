#!/usr/bin/env bash
# Run the whole test suite in the project's own environment (created on first use).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export NUMBA_CACHE_DIR=${NUMBA_CACHE_DIR:-$PWD/.numba_cache}
# Lint gate (pinned ruff in the dev extra), then the tests. Extra arguments go to pytest.
.venv/bin/ruff check src tests benchmarks
# Numba's kernels compiled once into the cache before the workers start (each would compile them again)
.venv/bin/python scripts/warm_kernels.py
# Both cores (CELLVIT_TEST_WORKERS=0 for one process): a test file, or a folder sharing session fixtures, stays
# on one worker, so its fixtures (exported graphs, slides) are made once (tests/conftest.py: pytest_xdist_make_scheduler); the
# extras install job runs beside them.
exec .venv/bin/python -m pytest -n "${CELLVIT_TEST_WORKERS:-2}" --dist loadfile "$@"
