"""The device probe of the runtime: the engine stage's probe (`cellvit_trt.engine.cuda_probe`) run through
this
package's swappable runtime module, so contract tests and real runs take the same path.

A TensorRT runtime created without a working driver returns an object whose first use segfaults
(reference/tensorrt.md §7): every GPU backend calls `probe_device()` first and gets a `DeviceError` instead.
"""

from __future__ import annotations

from cellvit_trt.engine.cuda_probe import CudaDevice
from cellvit_trt.engine.cuda_probe import probe_device as _engine_probe
from cellvit_trt.errors import DependencyError, DeviceError
from cellvit_trt.runtime.cuda import api

DeviceInfo = CudaDevice


def probe_device(index: int = 0) -> CudaDevice:
    """Describe CUDA device `index` (making it current) or raise DeviceError saying what is missing."""
    try:
        rt = api.cudart()
    except DependencyError as exc:
        raise DeviceError(f"no usable GPU: {exc}") from exc
    return _engine_probe(index, rt)


def gpu_available(index: int = 0) -> bool:
    try:
        probe_device(index)
    except DeviceError:
        return False
    return True
