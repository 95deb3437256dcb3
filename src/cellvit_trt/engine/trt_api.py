"""Import TensorRT safely and smooth over the API differences between TensorRT 10.3 and 11.x.

Every difference is detected by feature (`hasattr`), never by parsing a version string: Jetson's JetPack 6
ships 10.3, x86 wheels ship 11.x, and the same code path serves both.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from cellvit_trt.engine.cuda_probe import CudaDevice, import_cudart, probe_device
from cellvit_trt.engine.errors import EngineBuildError
from cellvit_trt.errors import DependencyError, DeviceError

INSTALL_TENSORRT = (
    "install TensorRT: on x86-64/SBSA run pip install tensorrt (its libraries come from NVIDIA's "
    "package index, pypi.nvidia.com, which must be reachable), or pip install 'cellvit-trt[trt]'; "
    "on Jetson with JetPack 6 use the system TensorRT 10.3: sudo apt install python3-libnvinfer "
    "(Python 3.10), and create the venv with --system-site-packages"
)


def import_tensorrt() -> ModuleType:
    """The `tensorrt` module, or a DependencyError saying how to install it. Creates no TensorRT object."""
    try:
        return importlib.import_module("tensorrt")
    except (ImportError, OSError) as exc:  # OSError: the bindings are there but libnvinfer is not
        raise DependencyError(f"TensorRT is not importable ({exc}); {INSTALL_TENSORRT}") from exc


def require_gpu_stack(
    device_index: int = 0, trt: ModuleType | None = None, cudart: ModuleType | None = None
) -> tuple[ModuleType, CudaDevice]:
    """Check cuda-python, TensorRT and the GPU (in that order) before any TensorRT object is created.

    Every missing piece is named in one message, so a user fixes them all at once.
    """
    problems: list[str] = []
    error_type: type[Exception] = DependencyError
    try:
        cudart = cudart or import_cudart()
    except DependencyError as exc:
        problems.append(str(exc))
    if trt is None:
        try:
            trt = import_tensorrt()
        except DependencyError as exc:
            problems.append(str(exc))
    device = None
    if cudart is not None:
        try:
            device = probe_device(device_index, cudart)
        except DeviceError as exc:
            problems.append(str(exc))
            if trt is not None:
                error_type = DeviceError
    if problems or trt is None or device is None:
        raise error_type("cannot build or run TensorRT engines here: " + " | ".join(problems))
    return trt, device


def tensorrt_version(trt: ModuleType) -> str:
    return str(getattr(trt, "__version__", "unknown"))


def network_flags(trt: ModuleType) -> int:
    """STRONGLY_TYPED (required on 10.x, ignored on 11.x), plus EXPLICIT_BATCH where the enum still has it."""
    flags = trt.NetworkDefinitionCreationFlag
    if not hasattr(flags, "STRONGLY_TYPED"):
        raise EngineBuildError(
            f"TensorRT {tensorrt_version(trt)} has no strongly typed networks; "
            f"cellvit-trt needs TensorRT >= 10.3; {INSTALL_TENSORRT}"
        )
    bits = 1 << int(flags.STRONGLY_TYPED)
    if hasattr(flags, "EXPLICIT_BATCH"):  # 10.x: deprecated no-op kept for old code paths; gone in 11
        bits |= 1 << int(flags.EXPLICIT_BATCH)
    return bits


@dataclass(frozen=True)
class ParserIssue:
    """One ONNX parser error with the node it is about (fields are empty where this TensorRT lacks them)."""

    description: str
    code: str = ""
    node_index: int = -1
    node_name: str = ""
    node_operator: str = ""

    def __str__(self) -> str:
        where = f"node {self.node_index}" if self.node_index >= 0 else "graph"
        if self.node_name or self.node_operator:
            where += f" '{self.node_name}' ({self.node_operator or '?'})"
        return f"{where}: {self.description}" + (f" [{self.code}]" if self.code else "")


def _call(obj: Any, name: str, default: Any) -> Any:
    method = getattr(obj, name, None)
    if method is None:
        return default
    value = method()
    return default if value is None else value


def parser_issues(parser: Any) -> list[ParserIssue]:
    """Every error the ONNX parser recorded, with node name and operator where the API offers them."""
    issues = []
    for i in range(int(parser.num_errors)):
        err = parser.get_error(i)
        code = _call(err, "code", "")
        issues.append(
            ParserIssue(
                description=str(_call(err, "desc", str(err))),
                code=str(getattr(code, "name", code)),
                node_index=int(_call(err, "node", -1)),
                node_name=str(_call(err, "node_name", "")),
                node_operator=str(_call(err, "node_operator", "")),
            )
        )
    return issues


_DTYPE_NAMES = {
    "FLOAT": "float32",
    "HALF": "float16",
    "BF16": "bfloat16",
    "INT8": "int8",
    "UINT8": "uint8",
    "INT32": "int32",
    "INT64": "int64",
    "BOOL": "bool",
    "FP8": "float8e4m3",
    "INT4": "int4",
    "FP4": "float4",
}


def dtype_name(dtype: Any) -> str:
    """A numpy-style name for a `trt.DataType` ('float16'), without `trt.nptype` (no BF16/FP8 mapping)."""
    name = getattr(dtype, "name", str(dtype).rsplit(".", 1)[-1])
    return _DTYPE_NAMES.get(name, name.lower())
