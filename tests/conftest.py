"""Shared test fixtures.

- `upstream`: the cellvit==1.0.9 oracle. It must be importable: CI fails loudly (never skips) without it.
- `gpu` / `tensorrt` markers: skipped when no CUDA GPU (probed through cuda-python) or no TensorRT is present.
"""

from __future__ import annotations

import importlib
import sys
import types

import pytest


def _import_upstream():
    # postprocessing_numpy imports ray at module level only for its actor; the oracle paths never use it.
    if "ray" not in sys.modules:
        try:
            importlib.import_module("ray")
        except ImportError:
            sys.modules["ray"] = types.ModuleType("ray")
    try:
        return importlib.import_module("cellvit")
    except ImportError as exc:
        pytest.fail(
            "the upstream oracle cellvit==1.0.9 is not installed; run scripts/setup_env.sh "
            f"(pip install --no-deps cellvit==1.0.9 plus tests/requirements-oracle.txt): {exc}",
            pytrace=False,
        )


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
