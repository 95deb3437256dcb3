"""The `tensorrt` module surface the builder and the runtime backend use, simulated over a `CudaSim`.

Builder half (recording; checks nothing about numerics, test_engine_gpu.py does that with real TensorRT):
two surfaces, from the TensorRT Python bindings (python/src/infer/pyCore.cpp, pyFoundationalTypes.cpp at
v10.3.0 and 11.x) and /work/shared/reference/tensorrt.md:
- "10.x" (JetPack 6's 10.3): EXPLICIT_BATCH in NetworkDefinitionCreationFlag; precision flags (FP16/BF16/INT8,
  OBEY/PREFER_PRECISION_CONSTRAINTS) exist; WEIGHTLESS (the deprecated alias of STRIP_PLAN) and
  REFIT_INDIVIDUAL exist; DeviceType.DLA exists; HardwareCompatibilityLevel has only NONE/AMPERE_PLUS; no
  `max_num_tactics`.
- "11.x" (11.4): strongly typed only (no precision flags, no EXPLICIT_BATCH); SAME_COMPUTE_CAPABILITY and
  `max_num_tactics` exist; DeviceType.DLA still exists (python/src/infer/pyCore.cpp binds DeviceType::kDLA).
The builder reads the real ONNX file for the network's inputs and outputs, records every call in
`trt.calls`, and writes a plan: b"SIMPLAN" + JSON (I/O, profile, flags, TensorRT version, SM, kernel).

Runtime half (checked; each rule is what the code relies on, with its source):
- `deserialize_cuda_engine` returns None and logs an error for a plan of another TensorRT version ("The engine
  plan file is not compatible with this version of TensorRT, expecting library version ... please rebuild")
  or GPU ("Engine plan file is generated on an incompatible device") unless built version- / hardware-
  compatible, and for a version-compatible plan unless `runtime.engine_host_code_allowed` is True (such
  plans carry host code: IRuntime::setEngineHostCodeAllowed, NvInferRuntime.h).
- A `trt.Runtime` made without a driver "returns an object anyway"; its first use crashes the interpreter
  (reference/tensorrt.md §7): here, a `Hazard`.
- Contexts: `set_input_shape` within the profile (False otherwise), and every dynamic input's shape set before
  an enqueue (TensorRT takes addresses before or after shapes; the backend, like samples/python/
  common_runtime.py, sets the shape first); `set_tensor_address` only for I/O names
  and 256-byte aligned pointers ("The pointer must have at least 256-byte alignment", NvInferRuntime.h),
  False otherwise; USER_MANAGED contexts need `set_device_memory(ptr, size)` with size >= the engine's
  `get_device_memory_size_for_profile_v2(profile)` before they enqueue.
- `execute_async_v3` returns False (and logs) when an input shape or any I/O address is unset, when device
  memory is missing, and when a CUDA error from an earlier call is pending (TensorRT checks
  cudaGetLastError). The first enqueue after a shape change does one-time work that cannot be captured
  (trtexec: "Avoid capturing initialization calls by executing the enqueue function at least once before
  starting CUDA graph capture", then `stream.synchronize()`, samples/common/sampleInference.cpp): capturing
  before that work has *completed* invalidates the capture and returns False.
- The enqueue reads the bound input and writes the outputs when its stream runs (`kernel`, a numpy function
  of the input), using the scratch memory; `set_input_consumed_event` records the event after the input read
  (inside a capture, that record is a captured one).
"""

from __future__ import annotations

import importlib.machinery
import json
import types
from typing import Any

import numpy as np
import onnx

_TIMING_HEADER = b"standin-timing-cache\n"
PLAN_MAGIC = b"SIMPLAN"
PARSER_ERROR_METHODS = ["code", "desc", "node", "node_name", "node_operator", "file", "line", "func"]


class _Member:
    def __init__(self, enum: str, name: str, value: int) -> None:
        self.enum, self.name, self.value = enum, name, value

    def __int__(self) -> int:
        return self.value

    def __repr__(self) -> str:
        return f"{self.enum}.{self.name}"


def _enum(name: str, members: list[str]) -> type:
    return type(name, (), {m: _Member(name, m, i) for i, m in enumerate(members)})


SURFACES = {
    "10.x": {
        "version": "10.3.0",
        "network_flags": ["EXPLICIT_BATCH", "STRONGLY_TYPED"],
        "builder_flags": [
            "FP16",
            "INT8",
            "DEBUG",
            "GPU_FALLBACK",
            "REFIT",
            "DISABLE_TIMING_CACHE",
            "TF32",
            "SPARSE_WEIGHTS",
            "SAFETY_SCOPE",
            "OBEY_PRECISION_CONSTRAINTS",
            "PREFER_PRECISION_CONSTRAINTS",
            "DIRECT_IO",
            "REJECT_EMPTY_ALGORITHMS",
            "VERSION_COMPATIBLE",
            "EXCLUDE_LEAN_RUNTIME",
            "FP8",
            "ERROR_ON_TIMING_CACHE_MISS",
            "BF16",
            "DISABLE_COMPILATION_CACHE",
            "STRIP_PLAN",
            "WEIGHTLESS",
            "REFIT_IDENTICAL",
            "WEIGHT_STREAMING",
            "INT4",
            "REFIT_INDIVIDUAL",
        ],
        "hardware_levels": ["NONE", "AMPERE_PLUS"],
        "device_types": ["GPU", "DLA"],
        "config_attrs": [
            "builder_optimization_level",
            "max_aux_streams",
            "profiling_verbosity",
            "hardware_compatibility_level",
            "default_device_type",
            "DLA_core",
            "progress_monitor",
        ],
        "parser_error_methods": PARSER_ERROR_METHODS,
    },
    "11.x": {
        "version": "11.4.0.106",
        "network_flags": ["STRONGLY_TYPED", "PREFER_AOT_PYTHON_PLUGINS", "PREFER_JIT_PYTHON_PLUGINS"],
        "builder_flags": [
            "DEBUG",
            "GPU_FALLBACK",
            "REFIT",
            "DISABLE_TIMING_CACHE",
            "EDITABLE_TIMING_CACHE",
            "TF32",
            "SPARSE_WEIGHTS",
            "SAFETY_SCOPE",
            "DIRECT_IO",
            "VERSION_COMPATIBLE",
            "EXCLUDE_LEAN_RUNTIME",
            "ERROR_ON_TIMING_CACHE_MISS",
            "DISABLE_COMPILATION_CACHE",
            "STRIP_PLAN",
            "WEIGHT_STREAMING",
            "STRICT_NANS",
            "MONITOR_MEMORY",
            "DISTRIBUTIVE_INDEPENDENCE",
            "REFIT_IDENTICAL",
            "REFIT_INDIVIDUAL",
        ],
        "hardware_levels": ["NONE", "AMPERE_PLUS", "SAME_COMPUTE_CAPABILITY"],
        "device_types": ["GPU", "DLA"],
        "config_attrs": [
            "builder_optimization_level",
            "max_aux_streams",
            "max_num_tactics",
            "profiling_verbosity",
            "hardware_compatibility_level",
            "default_device_type",
            "DLA_core",
            "progress_monitor",
            "tiling_optimization_level",
        ],
        "parser_error_methods": [*PARSER_ERROR_METHODS, "local_function_stack"],
    },
}
PRECISION_FLAGS = {
    "FP16",
    "BF16",
    "INT8",
    "FP8",
    "INT4",
    "FP4",
    "OBEY_PRECISION_CONSTRAINTS",
    "PREFER_PRECISION_CONSTRAINTS",
}
_ONNX_TO_TRT = {
    "uint8": "UINT8",
    "float32": "FLOAT",
    "float16": "HALF",
    "int8": "INT8",
    "int32": "INT32",
    "int64": "INT64",
    "bool": "BOOL",
}


def make_tensorrt(
    surface: str = "11.x",
    *,
    sim: Any = None,
    parse_errors: list[dict[str, Any]] | None = None,
    build_fails: bool = False,
    build_log: list[tuple[str, str]] | None = None,
    layer_info: dict[str, Any] | None = None,
    num_dla_cores: int = 0,
    legacy_parser_errors: bool = False,
) -> types.ModuleType:
    spec = SURFACES[surface]
    trt = types.ModuleType("tensorrt")
    trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)  # find_spec("tensorrt") sees it
    trt.__version__ = spec["version"]
    trt.calls = calls = []  # the recorded call sequence: (what, *args)
    trt.NetworkDefinitionCreationFlag = _enum("NetworkDefinitionCreationFlag", spec["network_flags"])
    trt.BuilderFlag = _enum("BuilderFlag", spec["builder_flags"])
    trt.HardwareCompatibilityLevel = _enum("HardwareCompatibilityLevel", spec["hardware_levels"])
    trt.DeviceType = _enum("DeviceType", spec["device_types"])
    trt.MemoryPoolType = _enum(
        "MemoryPoolType",
        [
            "WORKSPACE",
            "DLA_MANAGED_SRAM",
            "DLA_LOCAL_DRAM",
            "DLA_GLOBAL_DRAM",
            "TACTIC_DRAM",
            "TACTIC_SHARED_MEMORY",
        ],
    )
    trt.ProfilingVerbosity = _enum("ProfilingVerbosity", ["LAYER_NAMES_ONLY", "NONE", "DETAILED"])
    trt.LayerInformationFormat = _enum("LayerInformationFormat", ["ONELINE", "JSON"])
    trt.TensorIOMode = _enum("TensorIOMode", ["NONE", "INPUT", "OUTPUT"])
    trt.DataType = _enum(
        "DataType", ["FLOAT", "HALF", "INT8", "INT32", "BOOL", "UINT8", "FP8", "BF16", "INT64", "INT4"]
    )
    severity = _enum("Severity", ["INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE"])

    class ILogger:
        Severity = severity

        def __init__(self) -> None:
            calls.append(("ILogger.__init__",))

    trt.ILogger = ILogger

    class IProgressMonitor:
        def __init__(self) -> None:
            calls.append(("IProgressMonitor.__init__",))

    trt.IProgressMonitor = IProgressMonitor

    class Tensor:
        def __init__(self, name: str, dtype: Any, shape: tuple[int, ...]) -> None:
            self.name, self.dtype, self.shape = name, dtype, shape

    class Network:
        def __init__(self, flags: int) -> None:
            self.flags, self.inputs, self.outputs = flags, [], []

        @property
        def num_inputs(self) -> int:
            return len(self.inputs)

        def get_input(self, i: int) -> Tensor:
            return self.inputs[i]

    class ParserError:
        def __init__(self, e: dict[str, Any]) -> None:
            self._e = e
            methods = spec["parser_error_methods"]
            if legacy_parser_errors:
                methods = ["code", "desc", "node"]
            for m in methods:
                value = {
                    "code": "UNSUPPORTED_NODE",
                    "desc": e["desc"],
                    "node": e["node"],
                    "node_name": e.get("name", ""),
                    "node_operator": e.get("op", ""),
                }.get(m, "")
                setattr(self, m, (lambda v: lambda: v)(value))

    class OnnxParser:
        def __init__(self, network: Network, logger: Any) -> None:
            calls.append(("OnnxParser",))
            self.network, self.logger, self._errors = network, logger, []

        @property
        def num_errors(self) -> int:
            return len(self._errors)

        def get_error(self, i: int) -> ParserError:
            return self._errors[i]

        def parse_from_file(self, path: str) -> bool:
            calls.append(("parse_from_file", path))
            if parse_errors:
                self._errors = [ParserError(e) for e in parse_errors]
                return False
            model = onnx.load(path, load_external_data=False)
            inits = {t.name for t in model.graph.initializer}

            def tensor(vi: Any) -> Tensor:
                tt = vi.type.tensor_type
                dims = tuple(int(d.dim_value) if d.HasField("dim_value") else -1 for d in tt.shape.dim)
                np_name = str(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type))
                return Tensor(vi.name, getattr(trt.DataType, _ONNX_TO_TRT[np_name]), dims)

            self.network.inputs = [tensor(v) for v in model.graph.input if v.name not in inits]
            self.network.outputs = [tensor(v) for v in model.graph.output]
            self.network.onnx_path = str(path)
            return True

    trt.OnnxParser = OnnxParser

    class TimingCache:
        def __init__(self, entries: set[bytes]) -> None:
            self.entries = set(entries)

        def combine(self, other: TimingCache, ignore_mismatch: bool) -> bool:
            calls.append(("TimingCache.combine", ignore_mismatch))
            self.entries |= other.entries
            return True

        def serialize(self) -> bytes:
            return _TIMING_HEADER + b"\n".join(sorted(self.entries))

    class Profile:
        def __init__(self) -> None:
            self.shapes = {}

        def set_shape(self, name: str, lo: tuple, opt: tuple, hi: tuple) -> None:
            calls.append(("set_shape", name, tuple(lo), tuple(opt), tuple(hi)))
            self.shapes[name] = (tuple(lo), tuple(opt), tuple(hi))

    def _config_class() -> type:
        def prop(name: str) -> property:
            def get(self: Any) -> Any:
                return self._attrs.get(name)

            def set_(self: Any, value: Any) -> None:
                calls.append(("set", name, value))
                self._attrs[name] = value

            return property(get, set_)

        class Config:
            def __init__(self) -> None:
                self._attrs: dict[str, Any] = {}
                self.flags: set[str] = {"TF32"}
                self.pools: dict[str, int] = {}
                self.profiles: list[Profile] = []
                self.timing_cache: TimingCache | None = None

            def set_flag(self, flag: _Member) -> None:
                calls.append(("set_flag", flag.name))
                self.flags.add(flag.name)

            def clear_flag(self, flag: _Member) -> None:
                calls.append(("clear_flag", flag.name))
                self.flags.discard(flag.name)

            def set_memory_pool_limit(self, pool: _Member, size: int) -> None:
                calls.append(("set_memory_pool_limit", pool.name, size))
                self.pools[pool.name] = size

            def add_optimization_profile(self, profile: Profile) -> int:
                calls.append(("add_optimization_profile",))
                self.profiles.append(profile)
                return len(self.profiles) - 1

            def create_timing_cache(self, data: bytes) -> TimingCache | None:
                data = bytes(data)
                calls.append(("create_timing_cache", data))
                if not data:
                    return TimingCache(set())
                if not data.startswith(_TIMING_HEADER):
                    return None
                return TimingCache({e for e in data[len(_TIMING_HEADER) :].split(b"\n") if e})

            def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
                calls.append(("set_timing_cache", ignore_mismatch))
                self.timing_cache = cache
                return True

            def get_timing_cache(self) -> TimingCache | None:
                return self.timing_cache

        for attr in spec["config_attrs"]:
            setattr(Config, attr, prop(attr))
        return Config

    Config = _config_class()

    class Builder:
        def __init__(self, logger: Any) -> None:
            calls.append(("Builder",))
            self.logger = logger
            self.num_DLA_cores = num_dla_cores

        def create_network(self, flags: int) -> Network:
            calls.append(("create_network", flags))
            return Network(flags)

        def create_builder_config(self) -> Config:
            calls.append(("create_builder_config",))
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config) -> bytes | None:
            calls.append(("build_serialized_network",))
            monitor = config._attrs.get("progress_monitor")
            if monitor is not None:  # TensorRT's phases: a top-level one with a nested one, a few steps each
                monitor.phase_start("Building engine", None, 2)
                for step in range(2):
                    monitor.phase_start("Tactic selection", "Building engine", 1)
                    keep_going = monitor.step_complete("Tactic selection", 0)
                    monitor.phase_finish("Tactic selection")
                    keep_going = keep_going and monitor.step_complete("Building engine", step)
                    if not keep_going:
                        calls.append(("build cancelled",))
                        monitor.phase_finish("Building engine")
                        return None
                monitor.phase_finish("Building engine")
            for sev, msg in build_log or []:
                self.logger.log(getattr(severity, sev), msg)
            if build_fails:
                return None
            profile = config.profiles[0].shapes if config.profiles else {}
            if config.timing_cache is not None:  # the build "times" one tactic per input shape
                for name, (_, opt, _) in profile.items():
                    config.timing_cache.entries.add(f"{name}:{opt}".encode())
            plan = {
                "inputs": [(t.name, t.dtype.name, t.shape) for t in network.inputs],
                "outputs": [(t.name, t.dtype.name, t.shape) for t in network.outputs],
                "profile": {k: [list(s) for s in v] for k, v in profile.items()},
                "flags": sorted(config.flags),
                "attrs": {k: repr(v) for k, v in config._attrs.items()},
                "tensorrt": trt.__version__,
                "kernel": "onnx",  # the runtime half runs the graph with ONNX Runtime (CPU)
                "onnx": getattr(network, "onnx_path", None),
                "device_memory": 4096,
            }
            return PLAN_MAGIC + json.dumps(plan).encode()

    trt.Builder = Builder

    class Inspector:
        def get_engine_information(self, fmt: _Member) -> str:
            calls.append(("get_engine_information", fmt.name))
            return json.dumps(layer_info if layer_info is not None else {"Layers": [], "Bindings": []})

    _runtime_surface(trt, sim, calls, severity, Inspector)
    return trt


_NP = {
    "FLOAT": "float32",
    "HALF": "float16",
    "UINT8": "uint8",
    "INT8": "int8",
    "INT32": "int32",
    "INT64": "int64",
    "BOOL": "bool",
}


def reference_outputs(images: np.ndarray, tissue: int) -> dict[str, np.ndarray]:
    """What the simulated CellViT engine computes (a cheap, input-dependent function of every output)."""
    img = images.astype(np.int32)
    return {
        "fg": (img[..., 0] < 128).astype(np.uint8),
        "hv": np.stack([img[..., 1], img[..., 2]], 1).astype(np.float16) / np.float16(255),
        "type_map": (img[..., 0] % 6).astype(np.uint8),
        "tissue_logits": np.repeat(img.mean(axis=(1, 2, 3))[:, None], tissue, 1).astype(np.float32),
    }


def _cellvit_kernel(image: np.ndarray, out_shapes: dict[str, tuple], plan: dict) -> dict[str, np.ndarray]:
    return reference_outputs(image, out_shapes["tissue_logits"][-1])


_SESSIONS: dict[str, Any] = {}


def _onnx_kernel(image: np.ndarray, out_shapes: dict[str, tuple], plan: dict) -> dict[str, np.ndarray]:
    """A plan built from a real ONNX graph computes what ONNX Runtime computes for it (CPU)."""
    import onnxruntime as ort

    path = plan["onnx"]
    if path not in _SESSIONS:
        _SESSIONS[path] = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    session = _SESSIONS[path]
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"image": image}), strict=True))


KERNELS = {"cellvit-reference": _cellvit_kernel, "onnx": _onnx_kernel}


def sim_plan(
    tile: int = 32,
    tissue: int = 5,
    *,
    max_batch: int = 4,
    static_batch: int | None = None,
    version_compatible: bool = False,
    tensorrt: str = "11.4.0.106",
    sm: str = "8.9",
    hardware: str = "none",
    device_memory: int = 4096,
) -> bytes:
    """A plan for the simulated runtime: the deployment graph's I/O, computed by `reference_outputs`."""
    n = static_batch or -1
    outputs = [
        ("fg", "UINT8", [n, tile, tile]),
        ("hv", "HALF", [n, 2, tile, tile]),
        ("type_map", "UINT8", [n, tile, tile]),
        ("tissue_logits", "FLOAT", [n, tissue]),
    ]
    plan = {
        "inputs": [("image", "UINT8", [n, tile, tile, 3])],
        "outputs": outputs,
        "profile": {}
        if static_batch
        else {"image": [[1, tile, tile, 3], [max_batch, tile, tile, 3], [max_batch, tile, tile, 3]]},
        "flags": ["VERSION_COMPATIBLE"] if version_compatible else [],
        "tensorrt": tensorrt,
        "sm": sm,
        "hardware": hardware,
        "device_memory": device_memory,
        "kernel": "cellvit-reference",
    }
    return PLAN_MAGIC + json.dumps(plan).encode()


def _runtime_surface(trt: Any, sim: Any, calls: list, severity: Any, inspector: type) -> None:
    from .cuda import Hazard

    trt.ExecutionContextAllocationStrategy = _enum(
        "ExecutionContextAllocationStrategy", ["STATIC", "ON_PROFILE_CHANGE", "USER_MANAGED"]
    )
    trt.nptype = lambda dt: np.dtype(_NP[dt.name]).type
    strategies = trt.ExecutionContextAllocationStrategy

    def error(logger: Any, msg: str) -> None:
        logger.log(severity.ERROR, msg)

    class Engine:
        def __init__(self, plan: dict[str, Any], logger: Any) -> None:
            self.plan, self.logger = plan, logger
            self.io = [(n, "INPUT", d, tuple(s)) for n, d, s in plan["inputs"]] + [
                (n, "OUTPUT", d, tuple(s)) for n, d, s in plan["outputs"]
            ]

        @property
        def num_io_tensors(self) -> int:
            return len(self.io)

        def get_tensor_name(self, i: int) -> str:
            return self.io[i][0]

        def _find(self, name: str) -> tuple:
            return next(t for t in self.io if t[0] == name)

        def get_tensor_mode(self, name: str) -> Any:
            return getattr(trt.TensorIOMode, self._find(name)[1])

        def get_tensor_dtype(self, name: str) -> Any:
            return getattr(trt.DataType, self._find(name)[2])

        def get_tensor_shape(self, name: str) -> tuple:
            return self._find(name)[3]

        def get_tensor_profile_shape(self, name: str, profile: int) -> list:
            return [tuple(s) for s in self.plan["profile"][name]]

        def get_device_memory_size_for_profile_v2(self, profile: int) -> int:
            return int(self.plan.get("device_memory", 0))

        @property
        def device_memory_size_v2(self) -> int:
            return int(self.plan.get("device_memory", 0))

        def create_engine_inspector(self) -> Any:
            return inspector()

        def create_execution_context(self, strategy: Any = None) -> Context:
            calls.append(("create_execution_context", getattr(strategy, "name", "STATIC")))
            return Context(self, strategy is strategies.USER_MANAGED)

    class Context:
        def __init__(self, engine: Engine, user_managed: bool) -> None:
            self.engine, self.user_managed = engine, user_managed
            self.shapes: dict[str, tuple] = {}
            self.addresses: dict[str, int] = {}
            self.memory: tuple[int, int] | None = None
            if not user_managed:  # STATIC: TensorRT allocates the context's activation memory itself
                self.memory = (
                    _call(sim.cudaMalloc(max(engine.get_device_memory_size_for_profile_v2(0), 1))),
                    engine.get_device_memory_size_for_profile_v2(0),
                )
            self.consumed: int | None = None
            self.settled_for: tuple | None = None  # the shapes whose one-time work has *completed*
            self.calls: list[tuple] = []

        def _log(self, msg: str) -> bool:
            error(self.engine.logger, msg)
            return False

        def set_device_memory(self, ptr: int, size: int) -> None:
            self.calls.append(("set_device_memory", int(size)))
            if not self.user_managed:
                self._log("IExecutionContext::setDeviceMemoryV2: context was not created USER_MANAGED")
                return
            self.memory = (int(ptr), int(size))

        @property
        def device_memory(self) -> int:
            return self.memory[0] if self.memory else 0

        @device_memory.setter
        def device_memory(self, ptr: int) -> None:  # TensorRT 10.0 spelling
            self.set_device_memory(ptr, self.engine.get_device_memory_size_for_profile_v2(0))

        def set_input_consumed_event(self, event: int) -> bool:
            self.calls.append(("set_input_consumed_event", int(event)))
            self.consumed = int(event)
            return True

        def set_input_shape(self, name: str, shape: Any) -> bool:
            shape = tuple(int(d) for d in shape)
            self.calls.append(("set_input_shape", name, shape))
            io = [t for t in self.engine.io if t[0] == name and t[1] == "INPUT"]
            if not io or len(shape) != len(io[0][3]):
                return self._log(f"setInputShape: {name!r} is not an input of rank {len(shape)}")
            lo, _, hi = self.engine.plan["profile"].get(name, [io[0][3]] * 3)
            if any(d < a or d > b for d, a, b in zip(shape, lo, hi, strict=True)):
                return self._log(f"setInputShape: {name} {shape} is outside the profile {lo}..{hi}")
            if self.shapes.get(name) != shape:
                self.shapes[name] = shape
                self.settled_for = None
            return True

        def set_tensor_address(self, name: str, ptr: int) -> bool:
            self.calls.append(("set_tensor_address", name))
            if name in sim_faults(sim).get("refuse_address", ()):
                return self._log(f"setTensorAddress: {name!r} refused (fault injected by the test)")
            if name not in [t[0] for t in self.engine.io]:
                return self._log(f"setTensorAddress: {name!r} is not an input or output tensor")
            if int(ptr) % 256:
                return self._log(f"setTensorAddress: {name!r} at {int(ptr):#x} is not 256-byte aligned")
            self.addresses[name] = int(ptr)
            return True

        def _out_shapes(self) -> dict[str, tuple]:
            n = self.shapes["image"][0]
            return {t[0]: (n, *t[3][1:]) for t in self.engine.io if t[1] == "OUTPUT"}

        def execute_async_v3(self, stream: int) -> bool:
            self.calls.append(("execute_async_v3", int(stream)))
            stream = int(stream)
            pending = sim.last_error
            if int(pending):
                sim.last_error = type(pending)(0)
                return self._log(f"enqueueV3: a CUDA error from an earlier call is pending: {pending.name}")
            inputs = [t for t in self.engine.io if t[1] == "INPUT"]
            if any(t[0] not in self.shapes and -1 in t[3] for t in inputs):
                return self._log("enqueueV3: Error Code 3: not all input shapes are specified")
            for t in inputs:
                self.shapes.setdefault(t[0], t[3])
            missing = [t[0] for t in self.engine.io if t[0] not in self.addresses]
            if missing:
                return self._log(f"enqueueV3: Error Code 3: no address set for tensors {missing}")
            need = self.engine.get_device_memory_size_for_profile_v2(0)
            if self.memory is None or self.memory[1] < need:
                return self._log(f"enqueueV3: device memory of {need} bytes is not set (USER_MANAGED)")
            capturing = sim.streams[stream].capture is not None
            faults = sim_faults(sim)
            if faults.get("execute_fails"):
                return self._log("enqueueV3: kernel launch failed (injected by the test)")
            if capturing and faults.get("capture_fails"):
                sim.invalidate_capture(stream, sim.cudaError_t.cudaErrorStreamCaptureUnsupported)
                return self._log("enqueueV3: an operation not permitted under stream capture (injected)")
            key = tuple(sorted(self.shapes.items()))
            if self.settled_for != key:
                if capturing:
                    sim.invalidate_capture(stream, sim.cudaError_t.cudaErrorStreamCaptureUnsupported)
                    return self._log("enqueueV3: one-time work after a shape change cannot be captured")

                def settle(ctx=self, key=key):
                    ctx.settled_for = key

                sim.launch(stream, "TensorRT one-time work after a shape change", settle, [], kind="host")
            self._launch(stream)
            if self.consumed is not None:
                sim.record(sim.events[self.consumed], sim.streams[stream])
            return True

        def _launch(self, stream: int) -> None:
            kernel = KERNELS.get(self.engine.plan.get("kernel"))
            if kernel is None:
                raise Hazard(f"plan kernel {self.engine.plan.get('kernel')!r} cannot run")
            image_shape = self.shapes["image"]
            out_shapes = self._out_shapes()
            addr = dict(self.addresses)
            dtypes = {t[0]: np.dtype(_NP[t[2]]) for t in self.engine.io}
            in_bytes = int(np.prod(image_shape)) * dtypes["image"].itemsize
            regions = [(addr["image"], in_bytes), (self.memory[0], self.memory[1])]
            regions += [(addr[n], int(np.prod(s)) * dtypes[n].itemsize) for n, s in out_shapes.items()]
            for ptr, nbytes in regions:
                sim.device_region(ptr, nbytes, "execute_async_v3")  # illegal addresses fail at enqueue

            def run():
                raw = sim.read_device(addr["image"], in_bytes, "TensorRT reads 'image'")
                image = raw.view(dtypes["image"]).reshape(image_shape)
                sim.write_device(self.memory[0], np.zeros(self.memory[1], np.uint8), "TensorRT scratch")
                for name, value in kernel(image, out_shapes, self.engine.plan).items():
                    sim.write_device(addr[name], value.astype(dtypes[name]), f"TensorRT writes {name!r}")

            sim.launch(stream, f"TensorRT enqueue {image_shape}", run, sim.uses(*regions))

    class Runtime:
        def __init__(self, logger: Any) -> None:
            calls.append(("Runtime",))
            self.logger = logger
            self.engine_host_code_allowed = False
            self.broken = sim is not None and sim.devices == 0

        def deserialize_cuda_engine(self, plan: bytes) -> Engine | None:
            if self.broken:
                raise Hazard("a TensorRT runtime made without a CUDA driver was used (segfault on real TRT)")
            calls.append(("deserialize_cuda_engine", self.engine_host_code_allowed))
            data = bytes(plan)
            if not data.startswith(PLAN_MAGIC):
                error(self.logger, "IRuntime::deserializeCudaEngine: Error Code 1: Serialization (magic tag)")
                return None
            spec = json.loads(data[len(PLAN_MAGIC) :])
            vc = "VERSION_COMPATIBLE" in spec.get("flags", [])
            if vc and not self.engine_host_code_allowed:
                error(
                    self.logger,
                    "IRuntime::deserializeCudaEngine: the plan is version compatible and "
                    "carries host code, which engine_host_code_allowed does not permit",
                )
                return None
            if not vc and spec.get("tensorrt", trt.__version__) != trt.__version__:
                error(
                    self.logger,
                    "The engine plan file is not compatible with this version of TensorRT, "
                    f"expecting library version {trt.__version__} got {spec['tensorrt']}, please rebuild.",
                )
                return None
            if sim is not None and spec.get("sm") and spec.get("hardware", "none") == "none":
                here = f"{sim.props.major}.{sim.props.minor}"
                if spec["sm"] != here:
                    error(
                        self.logger,
                        "Engine plan file is generated on an incompatible device, expecting "
                        f"compute {here} got compute {spec['sm']}, please rebuild.",
                    )
                    return None
            return Engine(spec, self.logger)

    trt.Runtime = Runtime


def sim_faults(sim: Any) -> dict:
    return getattr(sim, "faults", {}) if sim is not None else {}


def _call(result: tuple) -> Any:
    err, *values = result
    assert int(err) == 0, err
    return values[0] if values else None
