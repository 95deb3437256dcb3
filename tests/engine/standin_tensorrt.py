"""A recording stand-in of the `tensorrt` module, for contract tests only (test_builder_contract.py).

Two surfaces, as documented in /work/shared/reference/tensorrt.md and the TensorRT Python bindings
(python/src/infer/pyCore.cpp at v10.3.0 and 11.x):
- "10.x" (JetPack 6's 10.3): EXPLICIT_BATCH still in NetworkDefinitionCreationFlag, FP16/BF16/INT8 and
  OBEY/PREFER_PRECISION_CONSTRAINTS builder flags exist, DeviceType.DLA exists, HardwareCompatibilityLevel has
  only NONE/AMPERE_PLUS, the builder config has no `max_num_tactics`.
- "11.x" (11.4): strongly typed only (no precision flags, no EXPLICIT_BATCH), SAME_COMPUTE_CAPABILITY and
  `max_num_tactics` exist, DeviceType has no DLA (11.0-11.4.0).
The stand-in reads the real ONNX file to give the network its real inputs and outputs, records every call in
`trt.calls`, and lets a test script parser errors, build failures, logged messages and the layer information.
It checks nothing about numerics: the GPU tests (test_engine_gpu.py) do that with real TensorRT.
"""

from __future__ import annotations

import json
import types
from typing import Any

import onnx

_TIMING_HEADER = b"standin-timing-cache\n"


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
            "REFIT_IDENTICAL",
            "WEIGHT_STREAMING",
            "INT4",
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
        "parser_error_methods": [
            "code",
            "desc",
            "node",
            "node_name",
            "node_operator",
            "file",
            "line",
            "func",
        ],
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
        "device_types": ["GPU"],
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
        "parser_error_methods": [
            "code",
            "desc",
            "node",
            "node_name",
            "node_operator",
            "file",
            "line",
            "func",
            "local_function_stack",
        ],
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
    parse_errors: list[dict[str, Any]] | None = None,
    build_fails: bool = False,
    build_log: list[tuple[str, str]] | None = None,
    layer_info: dict[str, Any] | None = None,
    num_dla_cores: int = 0,
    legacy_parser_errors: bool = False,
) -> types.ModuleType:
    spec = SURFACES[surface]
    trt = types.ModuleType("tensorrt")
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
            }
            return b"PLAN" + json.dumps(plan).encode()

    trt.Builder = Builder

    class Inspector:
        def get_engine_information(self, fmt: _Member) -> str:
            calls.append(("get_engine_information", fmt.name))
            return json.dumps(layer_info if layer_info is not None else {"Layers": [], "Bindings": []})

    class Engine:
        def __init__(self, plan: dict[str, Any]) -> None:
            self.plan = plan
            self.io = [(n, "INPUT", d, s) for n, d, s in plan["inputs"]] + [
                (n, "OUTPUT", d, s) for n, d, s in plan["outputs"]
            ]

        @property
        def num_io_tensors(self) -> int:
            return len(self.io)

        def get_tensor_name(self, i: int) -> str:
            return self.io[i][0]

        def _find(self, name: str) -> tuple:
            return next(t for t in self.io if t[0] == name)

        def get_tensor_mode(self, name: str) -> _Member:
            return getattr(trt.TensorIOMode, self._find(name)[1])

        def get_tensor_dtype(self, name: str) -> _Member:
            return getattr(trt.DataType, self._find(name)[2])

        def get_tensor_shape(self, name: str) -> tuple:
            return tuple(self._find(name)[3])

        def get_tensor_profile_shape(self, name: str, profile: int) -> list:
            return [tuple(s) for s in self.plan["profile"][name]]

        def create_engine_inspector(self) -> Inspector:
            return Inspector()

    class Runtime:
        def __init__(self, logger: Any) -> None:
            calls.append(("Runtime",))
            self.engine_host_code_allowed = False

        def deserialize_cuda_engine(self, plan: bytes) -> Engine | None:
            calls.append(("deserialize_cuda_engine", self.engine_host_code_allowed))
            if not bytes(plan).startswith(b"PLAN"):
                return None
            return Engine(json.loads(bytes(plan)[4:]))

    trt.Runtime = Runtime
    return trt
