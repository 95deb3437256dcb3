"""The facts an engine plan depends on besides the graph and the settings, and the cache key over all of them.

Two kinds of fields (docs/engine.md, "What TensorRT refuses"):
- `REFUSED_FIELDS`: TensorRT refuses to deserialise a plan when these differ (unless it was built version- or
  hardware-compatible): the TensorRT version, the compute capability, the CUDA major and the OS/CPU.
- `TUNED_FIELDS`: the GPU model (name, SM count; Orin modules share SM 8.7). TensorRT loads a plan built on
  another model of the same SM with a warning ("Using an engine plan file across different models of devices
  is not recommended and is likely to affect performance or even cause errors"), so a run warns, and a build
  for this machine (`ensure_engine`) rebuilds.
The CUDA driver is not a field: TensorRT does not check it, and a routine driver update must not turn every
engine foreign. It is kept in the sidecar's `versions`, for information.
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
KEY_SCHEMA = "cellvit-trt-engine-key/2"  # /2: CUDA major instead of the driver and runtime versions


@dataclass(frozen=True)
class Environment:
    tensorrt: str
    cuda_major: int  # of the CUDA runtime (cuda-bindings): TensorRT and cuda-bindings come per CUDA major
    compute_capability: str
    gpu_name: str
    sm_count: int
    os: str
    arch: str

    @classmethod
    def current(cls, tensorrt_version: str, device: CudaDevice) -> Environment:
        return cls(
            tensorrt=tensorrt_version,
            cuda_major=device.runtime_version // 1000,
            compute_capability=device.sm,
            gpu_name=device.name,
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
            f"CUDA {self.cuda_major}, {self.os} {self.arch}"
        )


ENVIRONMENT_FIELDS = tuple(f.name for f in dataclasses.fields(Environment))
TUNED_FIELDS = ("gpu_name", "sm_count")
REFUSED_FIELDS = tuple(f for f in ENVIRONMENT_FIELDS if f not in TUNED_FIELDS)


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
