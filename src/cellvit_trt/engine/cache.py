"""Step 4: the engine cache — reuse an engine only when its sidecar proves it fits, else rebuild/refuse.

    artifact = ensure_engine("model.onnx", BuildSettings(max_batch=8))
    artifact.path, artifact.built, artifact.reason

Where the engine goes: `settings.output`, else `<graph>.engine` beside the ONNX when that folder is writable,
else `<cache root>/engines/<graph>-<key16>.engine`. Checks run on the sidecar and the file's bytes before
TensorRT sees anything; a rebuild says why (foreign, stale, truncated, tampered, ...).
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from cellvit_trt import __version__
from cellvit_trt.cache_root import default_cache_root
from cellvit_trt.config import to_dict
from cellvit_trt.engine.cuda_probe import CudaDevice, cuda_python_version
from cellvit_trt.engine.environment import Environment, cache_key, key_fields
from cellvit_trt.engine.errors import EngineBuildError, EngineCacheError
from cellvit_trt.engine.filelock import file_lock
from cellvit_trt.engine.layer_info import AttentionReport, check_attention
from cellvit_trt.engine.onnx_model import OnnxModelInfo, inspect_onnx
from cellvit_trt.engine.settings import BuildSettings
from cellvit_trt.engine.sidecar import layers_path, load_engine_bytes, read_sidecar, write_engine
from cellvit_trt.engine.timing_cache import timing_cache_path
from cellvit_trt.engine.trt_api import require_gpu_stack, tensorrt_version
from cellvit_trt.io import write_json

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineArtifact:
    path: Path
    key: str
    built: bool
    reason: str  # why it was (re)built, or "cache hit"
    sidecar: dict[str, Any]
    attention: AttentionReport | None = None


def default_engine_path(onnx_path: Path, key: str) -> Path:
    beside = onnx_path.with_suffix(".engine")
    if os.access(onnx_path.parent, os.W_OK):
        return beside
    return default_cache_root() / "engines" / f"{onnx_path.stem}-{key[:16]}.engine"


def engine_record(
    info: OnnxModelInfo,
    settings: BuildSettings,
    env: Environment,
    device: CudaDevice,
    fields: dict[str, Any],
    key: str,
) -> dict[str, Any]:
    """The sidecar content known before the build (the build adds io, build details and the engine hash)."""
    return {
        "key": key,
        "key_fields": fields,
        "onnx": {
            "file": str(info.path),
            "sha256": info.sha256,
            "opset": info.opset,
            "external_data": list(info.external_data),
            "inputs": [t.as_dict() for t in info.inputs],
            "outputs": [t.as_dict() for t in info.outputs],
        },
        "metadata": info.metadata,
        "settings": to_dict(settings),
        "versions": {
            "cellvit_trt": __version__,
            "tensorrt": env.tensorrt,
            "cuda_driver": device.driver_version,  # for information: not part of the key (environment.py)
            "cuda_runtime": device.runtime_version,
            "cuda_python": cuda_python_version(),
            "python": platform.python_version(),
        },
        "device": {
            "name": device.name,
            "compute_capability": device.sm,
            "sm_count": device.sm_count,
            "total_memory": device.total_memory,
            "integrated": device.integrated,
        },
        "host": {"os": env.os, "arch": env.arch, "platform": platform.platform()},
    }


def ensure_engine(
    onnx_path: str | Path,
    settings: BuildSettings,
    *,
    trt: ModuleType | None = None,
    device: CudaDevice | None = None,
    verbose: bool = False,
    progress: Callable[[str], None] | None = None,
) -> EngineArtifact:
    """A verified engine for `onnx_path` under `settings`: reused from the cache or built now.

    `trt` and `device` default to the probed stack (`require_gpu_stack`); pass both only after probing.
    `progress(text)` receives build progress (why it builds, TensorRT's phases); default: logging.
    """
    onnx_path = Path(onnx_path)
    info = inspect_onnx(onnx_path)
    if trt is None or device is None:
        trt, device = require_gpu_stack(settings.device, trt)
    env = Environment.current(tensorrt_version(trt), device)
    fields = key_fields(info.sha256, settings, env)
    key = cache_key(fields)
    path = Path(settings.output) if settings.output else default_engine_path(onnx_path, key)

    reason = _check_cached(path, key, fields, settings)
    if isinstance(reason, EngineArtifact):
        return reason
    # One build per engine path at a time; whoever waited re-checks, since the engine may now exist.
    with file_lock(path):
        if settings.rebuild != "always":
            again = _check_cached(path, key, fields, settings, quiet=True)
            if isinstance(again, EngineArtifact):
                return again
        return _build(
            onnx_path, path, info, settings, trt, device, env, fields, key, reason, verbose, progress
        )


def _check_cached(
    path: Path, key: str, fields: dict[str, Any], settings: BuildSettings, quiet: bool = False
) -> EngineArtifact | str:
    """The cached artifact if it verifies, else the reason to build; with --no-rebuild, EngineCacheError."""
    if settings.rebuild == "always":
        return "rebuild asked for (--rebuild)"
    try:
        load_engine_bytes(path, key, expected_fields=fields)
    except EngineCacheError as exc:
        if settings.rebuild == "never":
            raise EngineCacheError(
                f"{exc}; not rebuilding (--no-rebuild); run without it to rebuild", exc.reason
            ) from exc
        if exc.reason == "missing":
            return f"no engine at {path} yet"
        if not quiet:
            log.warning("rebuilding: %s", exc)
        return str(exc)
    log.info("engine cache hit: %s", path)
    return EngineArtifact(path, key, False, "cache hit", read_sidecar(path))


def _build(
    onnx_path: Path,
    path: Path,
    info: OnnxModelInfo,
    settings: BuildSettings,
    trt: ModuleType,
    device: CudaDevice,
    env: Environment,
    fields: dict[str, Any],
    key: str,
    reason: str,
    verbose: bool,
    progress: Callable[[str], None] | None,
) -> EngineArtifact:
    from cellvit_trt.engine.build import build_plan  # only when a build happens

    timing = None
    if settings.timing_cache:
        timing = timing_cache_path(settings.timing_cache_dir or default_cache_root() / "timing", env)
    (progress or log.info)(f"building {path.name} for {device.name}: {reason}")
    result = build_plan(
        trt, device, onnx_path, settings, timing_cache=timing, verbose=verbose, progress=progress
    )
    attention = (
        check_attention(result.layer_info, info.attention_blocks)
        if result.layer_info
        else AttentionReport("unknown" if info.attention_blocks else "none", info.attention_blocks)
    )
    if result.layer_info is not None:
        write_json(layers_path(path), result.layer_info)
    if attention.warning:
        log.warning("%s: %s", path.name, attention.warning)
        if settings.require_fused_attention and attention.verdict in ("unfused", "unconfirmed", "unknown"):
            raise EngineBuildError(
                f"{attention.warning} (build.require_fused_attention is set; the engine was "
                f"not written, layer information is in {layers_path(path)})"
            )
    record = engine_record(info, settings, env, device, fields, key)
    record["io"] = result.io
    record["build"] = {
        **result.applied,
        "tile_size": result.profile.tile_size,
        "seconds": round(result.seconds, 3),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "reason": reason,
        "attention": attention.as_dict(),
        "tensorrt_warnings": result.warnings[-50:],
        "command": " ".join(sys.argv),
    }
    sidecar = write_engine(path, result.plan, record)
    return EngineArtifact(path, key, True, reason, sidecar, attention)
