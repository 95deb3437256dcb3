"""`cellvit-trt run` settings: one frozen dataclass, from the YAML `run:` section and flags
(`config.resolve`).

The effective settings are written into every run summary.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Backend = Literal["auto", "tensorrt", "onnxruntime", "torch", "torch-cuda"]
# the writers' names (cellvit_trt.runtime.writers.OUTPUTS); kept here so `--help` stays light
OUTPUTS = ("geojson", "cells", "table", "embeddings", "tissue", "overlay", "summary")
DEFAULT_OUTPUTS = ("geojson", "cells", "table", "summary")


@dataclass(frozen=True)
class RunSettings:
    # what to run on, with what, where to
    input: list[str] | str | Path | None = None  # files, folders, globs, manifests (runtime.inputs)
    model: str = "demo"  # engine, ONNX graph, checkpoint, or 'demo' (the shipped tiny model)
    output: Path = Path("cellvit-out")  # results go to <output>/<input name>/ (runtime.outdir)
    backend: Backend = "auto"
    # execution
    batch: int = 8
    workers: int = 0  # post-processing threads; 0 = CPU count
    readers: int = 0  # tile reading threads; 0 = 1 on CPU backends, up to 4 on GPU backends (slide decoding)
    in_flight: int = 2  # batches submitted to the backend at once (GPU backends)
    queue_size: int | None = None  # bound of the inter-stage queues; None = derived from batch/workers
    precision: str | None = None  # torch backends: fp32/fp16; export of a checkpoint: fp32/fp16
    providers: list[str] | None = (
        None  # ONNX Runtime execution providers, in order ("cpu", "cuda", "tensorrt")
    )
    threads: int = 0  # ONNX Runtime / PyTorch intra-op threads; 0 = library default
    device: int = 0
    cuda_graphs: bool = False
    trusted_keys: Path | None = None  # folder of Ed25519 *.pub keys: run only engines signed by one of them
    tile_size: int | None = None  # checkpoints only (graphs and engines carry their own)
    cache_dir: Path | None = None  # exported graphs (default: the package cache)
    # pixels
    reader: Literal["auto", "openslide", "tiffslide"] = (
        "auto"  # slide library (auto: OpenSlide, else tiffslide)
    )
    mpp: float | None = None  # override the slide's own mpp (level 0), e.g. for images without metadata
    target_mpp: float | None = None  # override the model's target mpp
    tissue: bool = True  # process only tiles with tissue (Otsu on a thumbnail)
    tissue_threshold: float = 0.01  # min tissue fraction of a tile (upstream min_intersection_ratio)
    max_pixels: int = 1 << 28  # images decoded whole (PNG, JPEG, flat TIFF): refused above (sources.pixels)
    max_bad_tiles: float = (
        0.01  # fraction of tiles that may fail to decode (left out, reported); beyond: fail
    )
    max_slide_pixels: int = 1 << 36  # slides read region by region: level-0 pixels, refused above
    # outputs
    outputs: list[str] = DEFAULT_OUTPUTS  # type: ignore[assignment]
    resume: bool = False
    checkpoint_tiles: int = 32  # tiles per resume-journal commit
    checkpoint_seconds: float = 30.0  # ... or seconds since the last commit, whichever comes first

    def validate(self) -> None:
        # ValueError: config.from_dict turns it into a ConfigError naming the YAML file (or "settings")
        for name in ("batch", "in_flight", "checkpoint_tiles", "max_pixels", "max_slide_pixels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: got {getattr(self, name)}, expected >= 1")
        if self.workers < 0 or self.threads < 0 or self.readers < 0:
            raise ValueError("workers/threads/readers: expected >= 0 (0 = automatic)")
        if not 0.0 <= self.max_bad_tiles <= 1.0:
            raise ValueError(f"max_bad_tiles: got {self.max_bad_tiles}, expected a fraction 0..1")
        if not self.checkpoint_seconds >= 0:
            raise ValueError(f"checkpoint_seconds: got {self.checkpoint_seconds}, expected >= 0")
        if self.queue_size is not None and self.queue_size < 1:
            raise ValueError(f"queue_size: got {self.queue_size}, expected >= 1")
        if not 0.0 <= self.tissue_threshold <= 1.0:
            raise ValueError(f"tissue_threshold: got {self.tissue_threshold}, expected 0..1")
        for name in ("mpp", "target_mpp"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise ValueError(f"{name}: got {v}, expected > 0 micrometres per pixel")
        unknown = [o for o in self.outputs if o not in OUTPUTS]
        if unknown or not self.outputs:
            raise ValueError(f"outputs: got {list(self.outputs)}, expected some of {', '.join(OUTPUTS)}")
        if self.precision is not None and self.precision not in ("fp32", "fp16"):
            raise ValueError(f"precision: got {self.precision!r}, expected 'fp32' or 'fp16'")
        if self.tile_size is not None and (self.tile_size <= 0 or self.tile_size % 16):
            raise ValueError(f"tile_size: got {self.tile_size}, expected a positive multiple of 16")

    def input_specs(self) -> list[str]:
        if self.input is None:
            return []
        if isinstance(self.input, (list, tuple)):
            return [str(i) for i in self.input]
        return [str(self.input)]

    def reader_threads(self, backend_kind: str) -> int:
        """A GPU backend outruns one slide decoder (a 1024² JPEG tile takes ~25 ms); a CPU one does not."""
        if self.readers:
            return self.readers
        return min(4, max(2, (os.cpu_count() or 1) // 4)) if backend_kind in ("tensorrt", "torch-cuda") else 1

    @property
    def post_workers(self) -> int:
        return self.workers or max(1, os.cpu_count() or 1)
