"""Step 3: network + config → serialized plan, then what the sidecar records about it (I/O, layers).

result = build_plan(trt, device, "model.onnx", BuildSettings(max_batch=8), timing_cache=path)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from cellvit_trt.engine.builder_config import ProfilePlan, make_builder_config, plan_profile
from cellvit_trt.engine.cuda_probe import CudaDevice
from cellvit_trt.engine.errors import EngineBuildError
from cellvit_trt.engine.layer_info import engine_layer_info
from cellvit_trt.engine.logger import make_logger
from cellvit_trt.engine.network import parse_onnx
from cellvit_trt.engine.progress import make_progress_monitor
from cellvit_trt.engine.settings import BuildSettings
from cellvit_trt.engine.timing_cache import attach_timing_cache, read_timing_cache, save_timing_cache
from cellvit_trt.engine.trt_api import dtype_name, tensorrt_version

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildResult:
    plan: bytes
    io: list[dict[str, Any]]
    layer_info: dict[str, Any] | None
    profile: ProfilePlan
    applied: dict[str, Any]
    seconds: float
    warnings: list[str] = field(default_factory=list)


def serialize(
    trt: ModuleType,
    builder: Any,
    network: Any,
    config: Any,
    logger: Any,
    progress: Callable[[str], None] | None = None,
) -> bytes:
    """`build_serialized_network` (10.x and 11.x); a failure quotes what TensorRT logged."""
    monitor = make_progress_monitor(trt, progress or log.info)
    if monitor is not None and hasattr(config, "progress_monitor"):
        config.progress_monitor = monitor
    host_memory = builder.build_serialized_network(network, config)
    if monitor is not None and monitor.cancelled:
        raise KeyboardInterrupt("TensorRT build cancelled")
    if host_memory is None:
        errors = "\n".join(f"  - {m}" for m in logger.errors[-15:]) or "  (TensorRT logged no error)"
        hint = ""
        if logger.looks_out_of_memory():
            hint = (
                "\nThis looks like a lack of device memory: lower build.workspace_mib, build.max_batch or "
                "build.optimization_level (0-2), set build.max_num_tactics, or close other GPU programs."
            )
        raise EngineBuildError(
            f"TensorRT {tensorrt_version(trt)} failed to build the engine:\n{errors}{hint}"
        )
    return bytes(memoryview(host_memory))


def describe_io(trt: ModuleType, engine: Any) -> list[dict[str, Any]]:
    """Name, mode, dtype, shape (-1 = dynamic) and profile-0 min/opt/max of every I/O tensor."""
    io = []
    for i in range(int(engine.num_io_tensors)):
        name = engine.get_tensor_name(i)
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        entry: dict[str, Any] = {
            "name": name,
            "mode": "input" if is_input else "output",
            "dtype": dtype_name(engine.get_tensor_dtype(name)),
            "shape": [int(d) for d in engine.get_tensor_shape(name)],
        }
        if is_input and any(d < 0 for d in entry["shape"]):
            entry["profile"] = [[int(d) for d in s] for s in engine.get_tensor_profile_shape(name, 0)]
        io.append(entry)
    return io


def inspect_plan(
    trt: ModuleType, logger: Any, plan: bytes, version_compatible: bool
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    runtime = trt.Runtime(logger)
    if version_compatible:
        runtime.engine_host_code_allowed = True  # version-compatible plans embed the lean runtime
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        errors = "; ".join(logger.errors[-5:])
        raise EngineBuildError(f"TensorRT built a plan it cannot load back ({errors or 'no error logged'})")
    return describe_io(trt, engine), engine_layer_info(trt, engine)


def build_plan(
    trt: ModuleType,
    device: CudaDevice,
    onnx_path: str | Path,
    settings: BuildSettings,
    timing_cache: Path | None = None,
    verbose: bool = False,
    progress: Callable[[str], None] | None = None,
) -> BuildResult:
    """Parse, configure, build and inspect. `trt` and `device` come from `require_gpu_stack` (probe first)."""
    start = time.perf_counter()
    logger = make_logger(trt, verbose)
    parsed = parse_onnx(trt, logger, onnx_path)
    profile = plan_profile(parsed.input_shapes(), settings, source=f"ONNX graph {onnx_path}")
    config, applied = make_builder_config(trt, parsed.builder, settings, device, profile)
    if timing_cache is not None:
        attach_timing_cache(config, read_timing_cache(timing_cache))
    log.info(
        "building %s (batch %d..%d, workspace %.1f GiB, level %d) on %s",
        onnx_path,
        settings.min_batch,
        settings.max_batch,
        applied["workspace_bytes"] / 2**30,
        settings.optimization_level,
        device.name,
    )
    plan = serialize(trt, parsed.builder, parsed.network, config, logger, progress)
    if timing_cache is not None:
        applied["timing_cache"] = str(timing_cache)
        applied["timing_cache_bytes"] = save_timing_cache(config, timing_cache)
    del config, parsed  # free the builder's memory before the plan is deserialised (matters on Jetson)
    io, layers = inspect_plan(trt, logger, plan, settings.version_compatible)
    return BuildResult(plan, io, layers, profile, applied, time.perf_counter() - start, list(logger.warnings))
