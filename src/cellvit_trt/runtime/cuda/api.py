"""The one door to the CUDA runtime: import, error funnel, feature detection.

Every CUDA call in the runtime goes through `cuda_call`, which unpacks the `(err, *values)` tuples that
cuda-python returns and raises a typed `CudaError` carrying the error's name (pattern of NVIDIA's
samples/python/common_runtime.py::cuda_call). The module object is looked up once by `cudart()`; tests of the
call contract swap it with `set_cudart` (a recording stand-in), never by patching individual calls.
"""

from __future__ import annotations

import threading
from typing import Any

from cellvit_trt.engine.cuda_probe import CudaError as _EngineCudaError
from cellvit_trt.engine.cuda_probe import import_cudart as _import_cudart

_lock = threading.Lock()
_cudart: Any = None


class CudaError(_EngineCudaError):
    """A CUDA runtime call failed; `name` is the CUDA error name, e.g. 'cudaErrorMemoryAllocation'."""

    def __init__(self, call: str, code: int, name: str):
        self.call, self.code, self.name = call, code, name
        super().__init__(f"CUDA call {call} failed: {name} ({code})")


def cudart() -> Any:
    """The cuda-python runtime module (`cuda.bindings.runtime`, else legacy `cuda.cudart`)."""
    global _cudart
    with _lock:
        if _cudart is None:
            _cudart = _import_cudart()
        return _cudart


def set_cudart(module: Any) -> Any:
    """Install a runtime module (a recording stand-in in contract tests); returns the previous one."""
    global _cudart
    with _lock:
        previous, _cudart = _cudart, module
        return previous


def _error_name(rt: Any, err: Any) -> str:
    try:
        res = rt.cudaGetErrorName(err)
        name = res[1] if isinstance(res, tuple) else res
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # the name is only decoration for the message; never mask the real error
        return getattr(err, "name", str(err))


def cuda_call(result: Any, call: str = "CUDA call") -> Any:
    """Check a cuda-python result `(err, *values)`; return None, the single value, or the tuple of values."""
    rt = cudart()
    if isinstance(result, tuple):
        err, values = result[0], result[1:]
    else:
        err, values = result, ()
    if int(err) != 0:
        raise CudaError(call, int(err), _error_name(rt, err))
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def call(name: str, *args: Any) -> Any:
    """`cuda_call(cudart().<name>(*args), name)`: the form used everywhere in this package."""
    rt = cudart()
    return cuda_call(getattr(rt, name)(*args), name)


def has(name: str) -> bool:
    """Whether the runtime module offers `name` (feature detection, done once at activation)."""
    return hasattr(cudart(), name)
