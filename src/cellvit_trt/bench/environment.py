"""Versions and device facts for reports (each probe is optional; nothing here needs a GPU)."""

from __future__ import annotations

import importlib
import os
import platform
from typing import Any

from cellvit_trt import __version__


def _version(module: str) -> str | None:
    try:
        return str(getattr(importlib.import_module(module), "__version__", "installed"))
    except Exception:  # noqa: BLE001 - a broken optional install is reported as absent, not fatal
        return None


def environment() -> dict[str, Any]:
    versions = {"cellvit-trt": __version__, "python": platform.python_version()}
    for name, module in (
        ("numpy", "numpy"),
        ("numba", "numba"),
        ("opencv", "cv2"),
        ("onnxruntime", "onnxruntime"),
        ("torch", "torch"),
        ("tensorrt", "tensorrt"),
    ):
        v = _version(module)
        if v is not None:
            versions[name] = v
    env: dict[str, Any] = {
        "versions": versions,
        "os": platform.platform(),
        "cpu": platform.machine(),
        "cpu_count": os.cpu_count(),
        "device": "cpu",
    }
    try:
        from cellvit_trt.engine.cuda_probe import probe_device

        dev = probe_device(0)
        env["device"] = dev.name
        env["cuda"] = dev.describe()
    except Exception:  # noqa: BLE001 - no GPU/driver/cuda-python: the report says cpu
        pass
    return env
