"""Build settings: one frozen dataclass, filled from the YAML `build:` section and `cellvit-trt build` flags.

Precision is deliberately absent: it is taken from the graph (FP16 casts, INT8 Q/DQ) and the network is built
strongly typed, the one recipe that works on TensorRT 10.3 (JetPack 6) and on TensorRT 11.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cellvit_trt.errors import ConfigError

HardwareCompatibility = Literal["none", "ampere_plus", "same_compute_capability"]
RebuildPolicy = Literal["auto", "never", "always"]

# Settings that decide where files go or what happens on a cache miss, not what engine is built.
# Everything else is part of the cache key.
NOT_IN_KEY = frozenset({"output", "rebuild", "timing_cache_dir", "device", "require_fused_attention"})


@dataclass(frozen=True)
class BuildSettings:
    """Everything `cellvit-trt build` can be told. Defaults give a fast engine for this GPU only."""

    # Optimisation profile for the batch dimension; opt defaults to max (throughput).
    min_batch: int = 1
    opt_batch: int | None = None
    max_batch: int = 8
    # Only for graphs whose H/W are dynamic; a graph with fixed H/W gives its own tile size.
    tile_size: int | None = None
    # Memory pool limit for tactics; None = 75 % of the free device memory at build time.
    workspace_mib: int | None = None
    optimization_level: int = 3
    tf32: bool = True
    max_aux_streams: int | None = None
    max_num_tactics: int | None = None
    # Portability (slower engines): run on newer TensorRT of the same major / on other GPU generations.
    version_compatible: bool = False
    exclude_lean_runtime: bool = False
    hardware_compatibility: HardwareCompatibility = "none"
    # Jetson: run what the DLA supports on DLA core N, the rest on the GPU.
    dla_core: int | None = None
    gpu_fallback: bool = True
    # Layer names and tactics kept in the plan, for the inspector JSON written next to the engine.
    detailed_profiling: bool = True
    timing_cache: bool = True
    timing_cache_dir: Path | None = None
    require_fused_attention: bool = False
    device: int = 0
    output: Path | None = None
    rebuild: RebuildPolicy = "auto"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def positive(name: str, value: int | None) -> None:
            if value is not None and value < 1:
                raise ConfigError(f"build.{name}: expected an integer >= 1, got {value}")

        for name in ("min_batch", "opt_batch", "max_batch", "tile_size", "workspace_mib", "max_num_tactics"):
            positive(name, getattr(self, name))
        opt = self.resolved_opt_batch
        if not self.min_batch <= opt <= self.max_batch:
            raise ConfigError(
                f"build: expected min_batch <= opt_batch <= max_batch, got {self.min_batch} <= {opt} <= "
                f"{self.max_batch}"
            )
        if not 0 <= self.optimization_level <= 5:
            raise ConfigError(f"build.optimization_level: expected 0..5, got {self.optimization_level}")
        if self.max_aux_streams is not None and self.max_aux_streams < 0:
            raise ConfigError(f"build.max_aux_streams: expected >= 0, got {self.max_aux_streams}")
        if self.device < 0:
            raise ConfigError(f"build.device: expected a CUDA device index >= 0, got {self.device}")
        if self.exclude_lean_runtime and not self.version_compatible:
            raise ConfigError("build.exclude_lean_runtime: only meaningful with version_compatible: true")
        if self.dla_core is not None:
            if self.dla_core < 0:
                raise ConfigError(f"build.dla_core: expected a DLA core index >= 0, got {self.dla_core}")
            if not self.min_batch == opt == self.max_batch:
                # DLA supports static shapes only: TensorRT rejects profiles whose min/opt/max differ.
                raise ConfigError(
                    "build.dla_core: the DLA needs a static batch; set min_batch = opt_batch = max_batch "
                    f"(got {self.min_batch}/{opt}/{self.max_batch})"
                )

    @property
    def resolved_opt_batch(self) -> int:
        return self.max_batch if self.opt_batch is None else self.opt_batch

    def key_fields(self) -> dict[str, Any]:
        """The settings that change the engine, as plain JSON values (opt_batch resolved)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name in NOT_IN_KEY:
                continue
            value = getattr(self, f.name)
            out[f.name] = str(value) if isinstance(value, Path) else value
        out["opt_batch"] = self.resolved_opt_batch
        return out
