"""The one door to the CUDA runtime for the streaming layer: which module, and `call`.

Every CUDA call of the runtime goes through `call(name, *args)`, i.e. the engine stage's `cuda_call`, which
unpacks cuda-python's `(err, *values)` tuples and raises the package's one `CudaError` (NVIDIA
samples/python/common_runtime.py::cuda_call pattern). The module object is looked up once by `cudart()`;
tests install the CUDA semantics simulator with `set_cudart`, never by patching individual calls.
"""

from __future__ import annotations

import threading
from typing import Any

from cellvit_trt.engine.cuda_probe import CudaError, cuda_call
from cellvit_trt.engine.cuda_probe import import_cudart as _import_cudart

__all__ = ["CudaError", "call", "cudart", "has", "set_cudart"]

_lock = threading.Lock()
_cudart: Any = None


def cudart() -> Any:
    """The cuda-python runtime module (`cuda.bindings.runtime`, else legacy `cuda.cudart`)."""
    global _cudart
    with _lock:
        if _cudart is None:
            _cudart = _import_cudart()
        return _cudart


def set_cudart(module: Any) -> Any:
    """Install a runtime module (the simulator in tests); returns the previous one."""
    global _cudart
    with _lock:
        previous, _cudart = _cudart, module
        return previous


def call(name: str, *args: Any) -> Any:
    """`cudart().<name>(*args)`, checked: None, the single value, or the tuple of values."""
    return cuda_call(cudart(), name, *args)


def has(name: str) -> bool:
    """Whether the runtime module offers `name` (feature detection, done once at activation)."""
    return hasattr(cudart(), name)
