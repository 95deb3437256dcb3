"""Probe CUDA through cuda-python before any TensorRT object exists.

TensorRT objects created without a working driver crash the interpreter (`trt.Runtime` returns an object whose
first use segfaults), so every GPU path calls `probe_device()` first and gets a `DeviceError` that says
what is missing instead. The runtime's TensorRT backend uses the same module (`import_cudart`, `cuda_call`).

    dev = probe_device(0)         # CudaDevice(name='NVIDIA H100 80GB HBM3', compute_capability=(9, 0), ...)
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from cellvit_trt.errors import DependencyError, DeviceError

INSTALL_CUDA_PYTHON = (
    "install it with: pip install 'cellvit-trt[trt]' (cuda-bindings; on JetPack 6 / Python 3.10 use "
    "pip install 'cuda-bindings>=12.6,<13')"
)
INSTALL_DRIVER = (
    "install the NVIDIA driver (on Jetson it comes with JetPack); in a container, start it with the NVIDIA "
    "container toolkit (docker run --gpus all ...)"
)

# cudaError_t values that mean "no usable driver" rather than "no GPU" (CUDA runtime API, driver_types.h).
_NO_DRIVER = {
    34: "only a stub of the driver library was found",
    35: "the driver is missing or older than this CUDA runtime",
    803: "the driver and the CUDA compatibility libraries do not match",
    804: "forward compatibility is not supported on this GPU",
}
_NO_DEVICE = 100


class CudaError(DeviceError):
    """A CUDA runtime call failed: `call` (with its arguments), `code` and `name` of the cudaError_t.

    The one CUDA error type of the package: the probe, the builder and the runtime's streaming layer all
    raise it through `cuda_call` (NVIDIA samples/python/common_runtime.py::cuda_call pattern)."""

    def __init__(self, call: str, code: int, name: str) -> None:
        self.call, self.code, self.name = call, code, name
        super().__init__(f"CUDA call {call} failed: {name} ({code})")


def import_cudart() -> ModuleType:
    """`cuda.bindings.runtime` (cuda-python >= 12.6), else the legacy `cuda.cudart` (gone in 13.x)."""
    errors = []
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return importlib.import_module(name)
        except ImportError as exc:
            errors.append(f"{name}: {exc}")
    raise DependencyError(
        "the CUDA probe and the TensorRT backend need cuda-python, which is not installed ("
        + "; ".join(errors)
        + f"); {INSTALL_CUDA_PYTHON}"
    )


def error_name(cudart: Any, err: Any) -> str:
    """`cudaErrorMemoryAllocation` for an error value (cuda-python enums carry their name)."""
    name = getattr(err, "name", None)
    if name:
        return str(name)
    try:
        res = cudart.cudaGetErrorName(err)
        name = res[1] if isinstance(res, tuple) else res
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # noqa: BLE001 - the name only decorates the message; never mask the real error
        return f"cudaError {int(err)}"


def cuda_call(cudart: Any, name: str, *args: Any) -> Any:
    """Call `cudart.<name>(*args)`, unpack `(err, *values)` and raise `CudaError` on failure.

    Returns None, the single value, or the tuple of values."""
    result = getattr(cudart, name)(*args)
    err, values = (result[0], result[1:]) if isinstance(result, tuple) else (result, ())
    if int(err) != 0:
        shown = ", ".join(str(a) for a in args)
        raise CudaError(f"{name}({shown})", int(err), error_name(cudart, err))
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def _version_str(v: int) -> str:
    # CUDA encodes versions as 1000 * major + 10 * minor (12060 = 12.6).
    return f"{v // 1000}.{(v % 1000) // 10}" if v else "none"


@dataclass(frozen=True)
class CudaDevice:
    """What the build and the engine cache need to know about one GPU."""

    index: int
    name: str
    compute_capability: tuple[int, int]
    sm_count: int
    total_memory: int
    free_memory: int
    integrated: bool  # True on Jetson: CPU and GPU share DRAM
    driver_version: int  # CUDA version the driver supports, e.g. 12060
    runtime_version: int

    @property
    def sm(self) -> str:
        return f"{self.compute_capability[0]}.{self.compute_capability[1]}"

    def describe(self) -> str:
        return (
            f"GPU {self.index}: {self.name} (SM {self.sm}, {self.sm_count} SMs, "
            f"{self.free_memory / 2**30:.1f}/{self.total_memory / 2**30:.1f} GiB free, "
            f"{'integrated' if self.integrated else 'discrete'}), "
            f"CUDA driver {_version_str(self.driver_version)}, "
            f"runtime {_version_str(self.runtime_version)}"
        )


def device_count(cudart: ModuleType | None = None) -> int:
    """Number of visible GPUs, or a `DeviceError` that says whether the driver or the GPU is missing."""
    cudart = cudart or import_cudart()
    try:
        err, count = cudart.cudaGetDeviceCount()
    except Exception as exc:  # noqa: BLE001 - cuda-python raises loader errors of several types here
        raise DeviceError(
            f"the CUDA runtime could not load the NVIDIA driver ({exc}); {INSTALL_DRIVER}"
        ) from exc
    code = int(err)
    if code in _NO_DRIVER:
        raise DeviceError(
            f"no usable NVIDIA driver: {_NO_DRIVER[code]} ({error_name(cudart, err)}); {INSTALL_DRIVER}"
        )
    if code == _NO_DEVICE or (code == 0 and not count):
        raise DeviceError(
            "the NVIDIA driver is present but sees no GPU; check nvidia-smi and CUDA_VISIBLE_DEVICES"
        )
    if code != 0:
        raise DeviceError(f"CUDA could not count the GPUs: {error_name(cudart, err)}; {INSTALL_DRIVER}")
    return int(count)


def probe_device(index: int = 0, cudart: ModuleType | None = None) -> CudaDevice:
    """Describe GPU `index`, making it current (this creates the primary context, shared with TensorRT)."""
    cudart = cudart or import_cudart()
    count = device_count(cudart)
    if not 0 <= index < count:
        raise DeviceError(f"GPU {index} was asked for but only {count} GPU(s) are visible (0..{count - 1})")
    prop = cuda_call(cudart, "cudaGetDeviceProperties", index)
    cuda_call(cudart, "cudaSetDevice", index)
    free, total = cuda_call(cudart, "cudaMemGetInfo")
    name = prop.name
    if isinstance(name, bytes):
        name = name.split(b"\0", 1)[0].decode("utf-8", "replace")
    return CudaDevice(
        index=index,
        name=str(name).strip(),
        compute_capability=(int(prop.major), int(prop.minor)),
        sm_count=int(prop.multiProcessorCount),
        total_memory=int(total),
        free_memory=int(free),
        integrated=bool(prop.integrated),
        driver_version=int(cuda_call(cudart, "cudaDriverGetVersion")),
        runtime_version=int(cuda_call(cudart, "cudaRuntimeGetVersion")),
    )


def cuda_python_version() -> str:
    from importlib import metadata

    for dist in ("cuda-bindings", "cuda-python"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"
