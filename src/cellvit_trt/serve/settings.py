"""`cellvit-trt serve` settings: one frozen dataclass from the YAML `serve:` section and flags.

The backend options mean what they mean for `cellvit-trt run` (the backend is chosen the same way).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cellvit_trt.runtime.settings import DEFAULT_OUTPUTS, OUTPUTS

Backend = Literal["auto", "tensorrt", "onnxruntime", "torch", "torch-cuda"]
DEFAULT_SOCKET = "unix:///tmp/cellvit-trt.sock"
SERVE_OUTPUTS = tuple(o for o in OUTPUTS if o != "overlay")  # the overlay reads back pixels: no random access


@dataclass(frozen=True)
class ServeSettings:
    # where to listen, where to write
    listen: str = (
        DEFAULT_SOCKET  # unix:///path, or host:port (127.0.0.1 / localhost / [::1] unless TLS + token)
    )
    output: Path = Path("cellvit-serve-out")  # one folder per slide: <output>/<sanitised slide id>/
    outputs: list[str] = DEFAULT_OUTPUTS  # type: ignore[assignment]
    # security
    tls_cert: Path | None = None
    tls_key: Path | None = None
    token_file: Path | None = None
    # limits
    max_slides: int = 4  # slides open at once (incl. those kept after a disconnect)
    max_tile_pixels: int = 4096 * 4096  # one Tile message, width x height
    max_slide_side: int = 400_000  # level-0 width or height
    keep_seconds: int = 300  # a slide whose client disconnected is kept this long for resume (0: discard)
    max_open_rows: int = 3  # model tile rows buffered per slide (PushSource max_bands)
    queue_tiles: int = 8  # finished model tiles waiting for the pipeline, per slide
    # backend and pipeline (as in `cellvit-trt run`)
    model: str = "demo"
    backend: Backend = "auto"
    batch: int | None = None  # None: chosen from the memory budget and the model's footprint, as `run`
    max_memory: str | int | None = None  # host memory budget, e.g. "8G" (default: what is available)
    workers: int = 0  # post-processing threads per slide; 0 = CPU count
    in_flight: int = 2
    precision: str | None = None
    providers: list[str] | None = None
    threads: int = 0
    device: int = 0
    cuda_graphs: bool = False
    tile_size: int | None = None
    cache_dir: Path | None = None

    def validate(self) -> None:
        for name in ("max_slides", "max_tile_pixels", "max_slide_side", "batch", "in_flight", "queue_tiles"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name}: got {getattr(self, name)}, expected >= 1")
        if self.max_memory is not None:
            from cellvit_trt.runtime.budget import parse_size

            parse_size(self.max_memory)
        if self.max_open_rows < 2:
            raise ValueError(f"max_open_rows: got {self.max_open_rows}, expected >= 2")
        if self.keep_seconds < 0 or self.workers < 0 or self.threads < 0:
            raise ValueError("keep_seconds/workers/threads: expected >= 0")
        bad = [o for o in self.outputs if o not in SERVE_OUTPUTS]
        if bad or not self.outputs:
            raise ValueError(
                f"outputs: got {list(self.outputs)}, expected some of {', '.join(SERVE_OUTPUTS)}"
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key: give both or neither")

    @property
    def post_workers(self) -> int:
        return self.workers or max(1, os.cpu_count() or 1)

    def tiles_in_memory(self, batch: int, backend_in_flight: int) -> int:
        """Model tiles one slide holds at most (docs/serve.md "Backpressure and memory"): those waiting for
        its pipeline, its reader queue, `batch` x (in flight + 1) at the backend, its post-processing."""
        return (
            self.queue_tiles + max(batch, 2) + batch * (max(2, backend_in_flight) + 1) + 2 * self.post_workers
        )
