"""`cellvit-trt bench` settings (YAML `bench:` section and flags, via `cellvit_trt.config.resolve`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cellvit_trt.errors import ConfigError


@dataclass(frozen=True)
class BenchSettings:
    model: str = "demo"  # engine, ONNX graph, checkpoint or 'demo'
    backend: Literal["auto", "tensorrt", "onnxruntime", "torch", "torch-cuda"] = "auto"
    batch: int = 1
    tile_size: int | None = None  # checkpoints only; graphs and engines carry their own
    precision: str | None = None  # torch backends / checkpoint export: fp32 or fp16
    threads: int = 0  # ONNX Runtime / PyTorch intra-op threads; 0 = library default
    warmup_s: float = 1.0  # at least 3 iterations as well (trtexec convention)
    duration_s: float = 10.0
    iterations: int | None = None  # a fixed count instead of a duration
    post_threads: list[int] | None = (
        None  # thread counts for the post-processing measurement; None = 1 and all
    )
    end_to_end: bool = True  # also run the whole pipeline on a slide
    slide: Path | None = None  # slide for the end-to-end run; None = a generated synthetic slide
    slide_tiles: int = 3  # synthetic slide size in tiles per side
    tissue_area_mm2: float = 225.0  # projection: a 15 x 15 mm tissue area at 40x (performance.md section 7)
    json: Path | None = Path("bench.json")
    chart: Path | None = Path("bench.png")
    seed: int = 0

    def validate(self) -> None:
        if self.batch < 1:
            raise ConfigError(f"batch: got {self.batch}, expected >= 1")
        if self.warmup_s < 0 or self.duration_s <= 0:
            raise ConfigError("warmup_s must be >= 0 and duration_s > 0 seconds")
        if self.iterations is not None and self.iterations < 1:
            raise ConfigError(f"iterations: got {self.iterations}, expected >= 1")
        if self.slide_tiles < 1:
            raise ConfigError(f"slide_tiles: got {self.slide_tiles}, expected >= 1")
        if self.tissue_area_mm2 <= 0:
            raise ConfigError(f"tissue_area_mm2: got {self.tissue_area_mm2}, expected > 0")
        if self.post_threads is not None and any(t < 1 for t in self.post_threads):
            raise ConfigError(f"post_threads: got {self.post_threads}, expected thread counts >= 1")
