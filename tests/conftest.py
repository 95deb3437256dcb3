"""Shared test fixtures.

- `upstream`: the cellvit==1.0.9 oracle. It must be importable: CI fails loudly (never skips) without it.
- `gpu` / `tensorrt` markers: skipped when no CUDA GPU (probed through cuda-python) or no TensorRT is present.
- the extras install job (scripts/check_extras.py): started in the background as soon as its tests are
  collected, so that it runs beside the rest of the suite; its tests run last and wait for it.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

EXTRAS_TESTS = "tests/install/test_extras_install.py"
# folders whose session fixtures (exported graphs, slides, a running server) serve several files: each goes to
# one xdist worker as a whole, so the fixtures are made once; any other file is a unit of its own
SHARED_FIXTURES = ("tests/export/", "tests/scale/", "tests/serve/")


def pytest_xdist_make_scheduler(config, log):
    """`--dist loadfile` with the SHARED_FIXTURES folders as single units (scripts/test.sh)."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class FolderScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return next((d for d in SHARED_FIXTURES if path.startswith(d)), path)

    return FolderScheduling(config, log)


def _import_upstream():
    from cellvit_trt.errors import DependencyError
    from upstream_oracle import import_upstream  # tests/upstream_oracle.py (stubs ray only when absent)

    try:
        return import_upstream()
    except DependencyError as exc:
        pytest.fail(f"{exc}; run scripts/setup_env.sh (tests/requirements-oracle.txt)", pytrace=False)


@pytest.fixture(scope="session")
def upstream():
    """The upstream `cellvit` package (oracle). Import submodules with importlib after requesting this."""
    return _import_upstream()


def _has_cuda_gpu() -> bool:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6 layout
    except ImportError:
        try:
            from cuda import cudart  # type: ignore[no-redef]
        except ImportError:
            return False
    try:
        err, count = cudart.cudaGetDeviceCount()
    except Exception:
        return False
    return int(err) == 0 and count > 0


def _has_tensorrt() -> bool:
    try:
        importlib.import_module("tensorrt")
    except ImportError:
        return False
    return True


def pytest_collection_modifyitems(config, items):
    gpu = _has_cuda_gpu()
    trt = gpu and _has_tensorrt()
    skip_gpu = pytest.mark.skip(reason="no CUDA GPU (probed through cuda-python)")
    skip_trt = pytest.mark.skip(reason="TensorRT or a CUDA GPU is not available")
    for item in items:
        if "tensorrt" in item.keywords and not trt:
            item.add_marker(skip_trt)
        elif "gpu" in item.keywords and not gpu:
            item.add_marker(skip_gpu)

    extras = [item for item in items if item.nodeid.startswith(EXTRAS_TESTS)]
    if extras:
        items[:] = [item for item in items if not item.nodeid.startswith(EXTRAS_TESTS)] + extras
        start_extras_job(config)


def start_extras_job(config) -> Path:
    """scripts/check_extras.py in the background, once per test run however many xdist workers collect it;
    returns its folder (log, results.json, and `rc` once it has ended)."""
    job = getattr(config, "_cellvit_extras_job", None)
    started = os.environ.get("CELLVIT_EXTRAS_WORK")  # scripts/test.sh started it before pytest
    if job is None and started and Path(started).is_dir():
        job = config._cellvit_extras_job = Path(started)
    if job is None:
        run_id = getattr(config, "workerinput", {}).get("testrunuid") or uuid.uuid4().hex
        work = Path(tempfile.gettempdir()) / f"cellvit-extras-{run_id}"
        try:
            work.mkdir()  # atomic: the worker that creates it starts the job, the others wait on the same one
        except FileExistsError:
            pass
        else:
            root = Path(__file__).resolve().parent.parent
            # returns at once; the job outlives the worker that started it, if that one ends first
            subprocess.run(
                ["bash", str(root / "scripts" / "extras_job.sh"), str(work), sys.executable],
                check=True,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        job = config._cellvit_extras_job = work
    return job
