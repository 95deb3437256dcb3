#!/usr/bin/env bash
# Run the whole test suite in the project's own environment (created on first use).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export NUMBA_CACHE_DIR=${NUMBA_CACHE_DIR:-$PWD/.numba_cache}
# Lint gate (pinned ruff in the dev extra), then the tests. Extra arguments go to pytest.
.venv/bin/ruff check src tests benchmarks
# The whole suite: the extras install job (tests/install/test_extras_install.py waits for it) starts now, on
# the core the kernel warm-up leaves idle; with a subset, tests/conftest.py starts it if that subset needs it.
if [ "$#" -eq 0 ]; then
  CELLVIT_EXTRAS_WORK=$(mktemp -d "${TMPDIR:-/tmp}/cellvit-extras-XXXXXXXX")
  export CELLVIT_EXTRAS_WORK
  bash scripts/extras_job.sh "$CELLVIT_EXTRAS_WORK" .venv/bin/python
fi
# Numba's kernels compiled once into the cache before the workers start (each would compile them again)
.venv/bin/python scripts/warm_kernels.py
# Both cores (CELLVIT_TEST_WORKERS=0 for one process): a test file, or a folder sharing session fixtures, stays
# on one worker, so its fixtures (exported graphs, slides) are made once (tests/conftest.py:
# pytest_xdist_make_scheduler).
exec .venv/bin/python -m pytest -n "${CELLVIT_TEST_WORKERS:-2}" --dist loadfile "$@"
