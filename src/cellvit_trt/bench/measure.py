"""Measure a backend the way trtexec does: warm up, then a fixed duration (or count) of timed batches.

The backend is anything with the runner interface of `cellvit_trt.runtime.backends` (context manager,
`infer`).
Timing is host wall time per batch (synchronous `infer`), which on a GPU backend is trtexec's "host latency"
(H2D + compute + D2H); a backend that records its own CUDA-event timings exposes them as `last_timings`
(a dict of seconds per phase for the last batch) and those are summarised per phase too.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cellvit_trt.bench.stats import summarize_ms


@dataclass
class BackendMeasurement:
    batch: int
    tile_size: int
    batches: int
    wall_s: float
    latencies_s: list[float]
    phases_s: dict[str, list[float]] = field(default_factory=dict)
    outputs: dict[str, np.ndarray] | None = None

    @property
    def tiles_per_s(self) -> float:
        return self.batches * self.batch / self.wall_s if self.wall_s > 0 else float("nan")

    @property
    def megapixels_per_s(self) -> float:
        return self.tiles_per_s * self.tile_size * self.tile_size / 1e6

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch": self.batch,
            "tile_size": self.tile_size,
            "batches": self.batches,
            "wall_s": self.wall_s,
            "tiles_per_s": self.tiles_per_s,
            "megapixels_per_s": self.megapixels_per_s,
            "latency_ms": summarize_ms(self.latencies_s),
            "phases_ms": {k: summarize_ms(v) for k, v in self.phases_s.items()},
        }


def measure(
    infer: Callable[[np.ndarray], dict[str, np.ndarray]],
    images: np.ndarray,
    *,
    warmup_s: float = 1.0,
    min_warmup_iters: int = 3,
    duration_s: float = 10.0,
    iterations: int | None = None,
    min_iterations: int = 3,
    timings: Callable[[], dict[str, float] | None] | None = None,
) -> BackendMeasurement:
    """Time `infer(images)` repeatedly. `images` is one batch, uint8 [N,H,W,3], reused for every call."""
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"bench input: expected uint8 [N,H,W,3], got {images.dtype}{list(images.shape)}")
    t_end = time.perf_counter() + warmup_s
    done = 0
    outputs = None
    while done < min_warmup_iters or time.perf_counter() < t_end:
        outputs = infer(images)
        done += 1
    latencies: list[float] = []
    phases: dict[str, list[float]] = defaultdict(list)
    start = time.perf_counter()
    deadline = start + duration_s
    while True:
        t0 = time.perf_counter()
        infer(images)
        latencies.append(time.perf_counter() - t0)
        if timings is not None:
            for k, v in (timings() or {}).items():
                phases[k].append(float(v))
        if iterations is not None:
            if len(latencies) >= iterations:
                break
        elif time.perf_counter() >= deadline and len(latencies) >= min_iterations:
            break  # a duration run still times a few batches, so percentiles mean something
    wall = time.perf_counter() - start
    return BackendMeasurement(
        batch=images.shape[0],
        tile_size=images.shape[1],
        batches=len(latencies),
        wall_s=wall,
        latencies_s=latencies,
        phases_s=dict(phases),
        outputs=outputs,
    )


def measure_postprocess(outputs: dict[str, np.ndarray], threads: int, repeats: int = 3) -> dict[str, float]:
    """Post-process one batch of backend outputs with the Numba kernels on `threads` threads."""
    from concurrent.futures import ThreadPoolExecutor

    from cellvit_trt.kernels import PostProcessor

    pp = PostProcessor()
    fg, hv, tp = outputs["fg"], outputs["hv"], outputs["type_map"]
    n = fg.shape[0]
    pp.process_tile(fg[0], hv[0], tp[0])  # compile / warm caches outside the timing
    jobs = [(fg[i % n], hv[i % n], tp[i % n]) for i in range(max(n, threads) * repeats)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = list(pool.map(lambda j: pp.process_tile(*j), jobs))
    wall = time.perf_counter() - t0
    cells = sum(len(r.cells) for r in results) / len(results)
    return {
        "threads": threads,
        "tiles": len(jobs),
        "wall_s": wall,
        "tiles_per_s": len(jobs) / wall,
        "ms_per_tile": 1e3 * wall / len(jobs) * threads,
        "cells_per_tile": cells,
    }


def slide_projection(tiles_per_s: float, tissue_area_mm2: float, mpp: float, stride: int) -> dict[str, float]:
    """Minutes per slide for `tissue_area_mm2` of tissue at `mpp`, tiles laid at `stride` px."""
    px_per_mm = 1000.0 / mpp
    tiles = tissue_area_mm2 * px_per_mm * px_per_mm / float(stride * stride)
    minutes = tiles / tiles_per_s / 60.0 if tiles_per_s > 0 else float("inf")
    return {
        "tissue_area_mm2": tissue_area_mm2,
        "mpp": mpp,
        "stride": stride,
        "tiles": tiles,
        "minutes_per_slide": minutes,
    }
