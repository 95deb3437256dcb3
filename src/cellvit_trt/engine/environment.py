"""The facts an engine plan depends on besides the graph and the settings, and the cache key over all of them.

A plan is tied to the TensorRT version, the GPU (name, compute capability, SM count: different Orin modules
share SM 8.7), the CUDA driver and runtime, and the OS/CPU architecture. The key is the SHA-256 of a canonical
JSON of these fields plus the ONNX digest and every engine-affecting setting, so it changes when any does.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
from dataclasses import dataclass
from typing import Any

from cellvit_trt.engine.cuda_probe import CudaDevice
from cellvit_trt.engine.settings import BuildSettings

# Bump when the builder changes what it asks TensorRT for, so old engines are rebuilt.
BUILDER_REVISION = 1
KEY_SCHEMA = "cellvit-trt-engine-key/1"


@dataclass(frozen=True)
class Environment:
    tensorrt: str
    cuda_driver: int
    cuda_runtime: int
    gpu_name: str
    compute_capability: str
    sm_count: int
    os: str
    arch: str

    @classmethod
    def current(cls, tensorrt_version: str, device: CudaDevice) -> Environment:
        return cls(
            tensorrt=tensorrt_version,
            cuda_driver=device.driver_version,
            cuda_runtime=device.runtime_version,
            gpu_name=device.name,
            compute_capability=device.sm,
            sm_count=device.sm_count,
            os=platform.system(),
            arch=platform.machine(),
        )

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        return (
            f"TensorRT {self.tensorrt} on {self.gpu_name} "
            f"(SM {self.compute_capability}, {self.sm_count} SMs), "
            f"CUDA driver {self.cuda_driver} / runtime {self.cuda_runtime}, {self.os} {self.arch}"
        )


ENVIRONMENT_FIELDS = tuple(f.name for f in dataclasses.fields(Environment))


def key_fields(onnx_sha256: str, settings: BuildSettings, env: Environment) -> dict[str, Any]:
    """Everything the engine depends on, as one flat JSON-ready mapping."""
    return {
        "schema": KEY_SCHEMA,
        "builder_revision": BUILDER_REVISION,
        "onnx_sha256": onnx_sha256,
        "settings": settings.key_fields(),
        **env.as_dict(),
    }


def cache_key(fields: dict[str, Any]) -> str:
    blob = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def explain_difference(recorded: dict[str, Any], expected: dict[str, Any]) -> tuple[str, str]:
    """Classify why two key-field mappings differ: ("foreign" | "stale", readable list of differences).

    Foreign = built elsewhere (other TensorRT, CUDA, GPU, OS); stale = graph or settings changed.
    """
    diffs: list[str] = []
    foreign = False
    for name in sorted(set(recorded) | set(expected)):
        old, new = recorded.get(name), expected.get(name)
        if old == new:
            continue
        if name == "settings" and isinstance(old, dict) and isinstance(new, dict):
            for s in sorted(set(old) | set(new)):
                if old.get(s) != new.get(s):
                    diffs.append(f"setting {s}: engine {old.get(s)!r}, wanted {new.get(s)!r}")
            continue
        if name == "onnx_sha256":
            diffs.append(f"ONNX changed (engine built from {str(old)[:12]}…, graph is now {str(new)[:12]}…)")
            continue
        foreign = foreign or name in ENVIRONMENT_FIELDS
        diffs.append(f"{name}: engine {old!r}, here {new!r}")
    return ("foreign" if foreign else "stale"), "; ".join(diffs) or "key differs"
