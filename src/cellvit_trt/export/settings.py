"""Export settings: one frozen dataclass, from YAML (`export:` section) and flags (`config.resolve`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cellvit_trt.errors import ConfigError

Precision = Literal["fp32", "fp16", "int8"]
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")
PATCH = 16


@dataclass(frozen=True)
class ExportSettings:
    checkpoint: Path | None = None
    output: Path | None = None
    precision: Precision = "fp16"
    tile_size: int = 1024
    # Tiling the graph was made for (metadata only: the runtime reads it). Upstream: 64 px total overlap.
    overlap: int = 64
    target_mpp: float = 0.25
    hv_dtype: Literal["float16", "float32"] = "float16"
    tokens: bool = False
    # None: 17 for fp32/fp16 (LayerNormalization, widest TensorRT support), 19 for int8 (fp16 Q/DQ scales)
    opset: int | None = None
    simplify: bool = True
    # FP16 recipe: also keep the attention softmax in FP32 (breaks TensorRT's MHA fusion; off by default)
    fp32_attention_softmax: bool = False
    # INT8 calibration: an image folder, an image, or a slide (or a folder of slides)
    calibration: Path | None = None
    calibration_tiles: int = 500
    # minmax: best agreement on the demo model and ~2x faster to collect than percentile (docs/export.md)
    calibration_method: Literal["minmax", "percentile", "entropy"] = "minmax"
    calibration_percentile: float = 99.999
    # tiles per calibration step: ORT keeps every quantised input of a step in memory (~5 GB per 1024² tile
    # for CellViT-256), so 1 by default
    calibration_batch: int = 1
    seed: int = 0
    # Parity gate against the PyTorch FP32 model (runs by default)
    gate: bool = True
    gate_tiles: int | None = None  # None: sized from the precision's thresholds (export/samples.py)
    gate_batch: int = 2
    # Keep a graph that failed the gate as `<name>.failed.onnx` for inspection (never at the target path)
    keep_failed: bool = True
    external_data: Literal["auto", "always", "never"] = "auto"
    overwrite: bool = True

    def validate(self) -> None:
        if self.tile_size <= 0 or self.tile_size % PATCH:
            raise ConfigError(
                f"tile_size: got {self.tile_size}, expected a positive multiple of {PATCH} "
                f"(the ViT patch size), e.g. 256 or 1024"
            )
        if not 0 <= self.overlap < self.tile_size:
            raise ConfigError(
                f"overlap: got {self.overlap}, expected 0 <= overlap < tile_size ({self.tile_size})"
            )
        if self.target_mpp <= 0:
            raise ConfigError(f"target_mpp: got {self.target_mpp}, expected > 0")
        if self.opset is not None and not 17 <= self.opset <= 21:
            raise ConfigError(
                f"opset: got {self.opset}, expected 17..21 (LayerNormalization needs 17; "
                f"TensorRT 10.3 parses up to 20)"
            )
        if self.opset is not None and self.precision == "int8" and self.opset < 19:
            raise ConfigError(
                f"opset: int8 graphs carry FP16 Q/DQ scales, which need opset >= 19, got {self.opset}"
            )
        for name in ("calibration_tiles", "calibration_batch", "gate_tiles", "gate_batch"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{name}: got {getattr(self, name)}, expected >= 1")
        if not 90.0 <= self.calibration_percentile <= 100.0:
            raise ConfigError(f"calibration_percentile: got {self.calibration_percentile}, expected 90..100")

    @property
    def resolved_opset(self) -> int:
        if self.opset is not None:
            return self.opset
        return 19 if self.precision == "int8" else 17
