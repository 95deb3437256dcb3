"""Shared test fixtures.

- `upstream`: the cellvit==1.0.9 oracle. It must be importable: CI fails loudly (never skips) without it.
- `gpu` / `tensorrt` markers: skipped when no CUDA GPU (probed through cuda-python) or no TensorRT is present.
"""

from __future__ import annotations

import importlib

import pytest


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
