"""Step 2: build settings → TensorRT builder config (profile, memory, optimisation level, compatibility, DLA).

No precision flag is ever set: the graph carries its dtypes and the network is strongly typed. Features that
differ between TensorRT 10.3 and 11.x are detected with hasattr; asking for one this TensorRT lacks is a
ConfigError that names it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from cellvit_trt.engine.cuda_probe import CudaDevice
from cellvit_trt.engine.settings import BuildSettings
from cellvit_trt.errors import ConfigError, InputError

log = logging.getLogger(__name__)

WORKSPACE_FRACTION_OF_FREE = 0.75
Shape = tuple[int, ...]


@dataclass(frozen=True)
class ProfilePlan:
    """min/opt/max per input that has dynamic dims, plus the tile size read from the graph."""

    shapes: dict[str, tuple[Shape, Shape, Shape]]
    tile_size: int | None
    fixed_batch: int | None


def _spatial(shape: Shape) -> Shape:
    # NHWC (the deployment graph: uint8 [N,H,W,3]) or NCHW: the two dims that are not batch or channels.
    if len(shape) != 4:
        return ()
    return shape[1:3] if shape[3] in (1, 3, 4) else shape[2:4]


def _fill(shape: Shape, batch: int, tile: int | None) -> Shape:
    """Dynamic dim 0 → `batch`, any other dynamic dim → `tile`."""
    return tuple(batch if (i == 0 and d < 0) else (tile if d < 0 else d) for i, d in enumerate(shape))  # type: ignore[misc]


def plan_profile(inputs: dict[str, Shape], settings: BuildSettings, source: str = "graph") -> ProfilePlan:
    """Pick min/opt/max shapes: dim 0 = batch from the settings; other dynamic dims = `tile_size`."""
    shapes: dict[str, tuple[Shape, Shape, Shape]] = {}
    tile = None
    fixed_batch = None
    for name, shape in inputs.items():
        if not shape:
            continue
        dynamic_rest = [i for i, d in enumerate(shape) if d < 0 and i > 0]
        if dynamic_rest and settings.tile_size is None:
            raise InputError(
                f"{source}: input '{name}' has dynamic dims {dynamic_rest} in shape {list(shape)}; "
                "export with a fixed tile size or give build.tile_size (--tile-size)"
            )
        spatial = _spatial(shape)
        static_spatial = [d for d in spatial if d > 0]
        if static_spatial:
            if settings.tile_size is not None and any(d != settings.tile_size for d in static_spatial):
                raise ConfigError(
                    f"build.tile_size: {settings.tile_size} given, but input '{name}' of {source} "
                    f"has the fixed shape {list(shape)}; drop tile_size or export the graph at that size"
                )
            tile = tile or static_spatial[0]
        elif spatial:
            tile = tile or settings.tile_size
        if shape[0] >= 0:
            fixed_batch = shape[0]
        if all(d >= 0 for d in shape):
            continue

        shapes[name] = tuple(
            _fill(shape, b, settings.tile_size)  # type: ignore[assignment]
            for b in (settings.min_batch, settings.resolved_opt_batch, settings.max_batch)
        )
    if fixed_batch is not None and not shapes and fixed_batch != settings.max_batch:
        log.warning(
            "%s has a fixed batch of %d; batch settings (max_batch %d) are ignored",
            source,
            fixed_batch,
            settings.max_batch,
        )
    return ProfilePlan(shapes, tile, fixed_batch)


def workspace_bytes(settings: BuildSettings, device: CudaDevice) -> int:
    if settings.workspace_mib is not None:
        return settings.workspace_mib << 20
    return int(device.free_memory * WORKSPACE_FRACTION_OF_FREE)


def _member(enum: Any, name: str, what: str, trt: ModuleType) -> Any:
    if not hasattr(enum, name):
        version = getattr(trt, "__version__", "?")
        raise ConfigError(f"{what}: TensorRT {version} does not offer {name}")
    return getattr(enum, name)


def _set_attr(config: Any, name: str, value: Any, setting: str, trt: ModuleType) -> None:
    if not hasattr(config, name):
        raise ConfigError(f"build.{setting}: TensorRT {getattr(trt, '__version__', '?')} has no {name}")
    setattr(config, name, value)


def make_builder_config(
    trt: ModuleType, builder: Any, settings: BuildSettings, device: CudaDevice, profile: ProfilePlan
) -> tuple[Any, dict[str, Any]]:
    """The builder config and a record of what was applied (for the sidecar)."""
    config = builder.create_builder_config()
    applied: dict[str, Any] = {}
    ws = workspace_bytes(settings, device)
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, ws)
    applied["workspace_bytes"] = ws
    _set_attr(config, "builder_optimization_level", settings.optimization_level, "optimization_level", trt)
    if not settings.tf32:
        config.clear_flag(_member(trt.BuilderFlag, "TF32", "build.tf32", trt))
    if settings.max_aux_streams is not None:
        _set_attr(config, "max_aux_streams", settings.max_aux_streams, "max_aux_streams", trt)
    if settings.max_num_tactics is not None:
        _set_attr(config, "max_num_tactics", settings.max_num_tactics, "max_num_tactics", trt)
    if settings.detailed_profiling:
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if settings.version_compatible:
        config.set_flag(_member(trt.BuilderFlag, "VERSION_COMPATIBLE", "build.version_compatible", trt))
        if settings.exclude_lean_runtime:
            config.set_flag(
                _member(trt.BuilderFlag, "EXCLUDE_LEAN_RUNTIME", "build.exclude_lean_runtime", trt)
            )
    if settings.hardware_compatibility != "none":
        levels = getattr(trt, "HardwareCompatibilityLevel", None)
        level = _member(levels, settings.hardware_compatibility.upper(), "build.hardware_compatibility", trt)
        _set_attr(config, "hardware_compatibility_level", level, "hardware_compatibility", trt)
    if settings.dla_core is not None:
        _use_dla(trt, builder, config, settings)
        applied["dla_core"] = settings.dla_core
    if profile.shapes:
        p = builder.create_optimization_profile()
        for name, (lo, opt, hi) in profile.shapes.items():
            p.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(p)
    applied["profile"] = {n: [list(s) for s in v] for n, v in profile.shapes.items()}
    return config, applied


def _use_dla(trt: ModuleType, builder: Any, config: Any, settings: BuildSettings) -> None:
    dla = _member(trt.DeviceType, "DLA", "build.dla_core", trt)  # absent in TensorRT 11.0-11.4.0
    cores = int(getattr(builder, "num_DLA_cores", 0))
    if settings.dla_core is None or settings.dla_core >= cores:
        raise ConfigError(
            f"build.dla_core: DLA core {settings.dla_core} asked for, but this device has {cores} "
            "(DLA exists on Jetson AGX/NX Orin and Xavier only)"
        )
    config.default_device_type = dla
    config.DLA_core = settings.dla_core
    if settings.gpu_fallback:
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
