"""TensorRT engines: probe, build (ONNX → strongly typed network → plan) and a cache that never lies.

Light to import: TensorRT, cuda-python and onnx are imported only when a build or a probe runs.

    from cellvit_trt.engine import BuildSettings, ensure_engine, load_engine_bytes
    artifact = ensure_engine("model.onnx", BuildSettings(max_batch=8))
    plan = load_engine_bytes(artifact.path, artifact.key)        # verified before deserialisation
"""

from cellvit_trt.engine.cache import EngineArtifact, ensure_engine
from cellvit_trt.engine.errors import EngineBuildError, EngineCacheError
from cellvit_trt.engine.settings import BuildSettings
from cellvit_trt.engine.sidecar import load_engine_bytes, read_sidecar, sidecar_path

__all__ = [
    "BuildSettings",
    "EngineArtifact",
    "EngineBuildError",
    "EngineCacheError",
    "ensure_engine",
    "load_engine_bytes",
    "read_sidecar",
    "sidecar_path",
]
