"""`cellvit-trt bench MODEL`: backend throughput/latency, post-processing, end-to-end stage breakdown.

Conventions follow trtexec (shared/reference/tensorrt.md section 14): warm-up (>= 3 iterations and
`warmup_s`), then a fixed duration or iteration count; latency min/mean/median/p90/p95/p99/max; throughput =
tiles / host wall time. The end-to-end part runs the real `cellvit-trt run` pipeline on a slide and reports
per-stage busy time and the fraction of time the backend waited for input.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

from cellvit_trt.argtypes import nonnegative_float, nonnegative_int, positive_float, positive_int
from cellvit_trt.config import add_config_argument, resolve, to_dict


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model",
        nargs="?",
        default=None,
        help="engine, ONNX graph, checkpoint, or 'demo' (the shipped tiny model; default)",
    )
    add_config_argument(p)
    p.add_argument(
        "--backend", default=None, choices=["auto", "tensorrt", "onnxruntime", "torch", "torch-cuda"]
    )
    p.add_argument("--batch", type=positive_int, default=None, help="tiles per batch (default 1)")
    p.add_argument("--tile-size", dest="tile_size", type=positive_int, default=None, help="checkpoints only")
    p.add_argument(
        "--precision", default=None, choices=["fp32", "fp16"], help="torch backends / checkpoint export"
    )
    p.add_argument(
        "--threads", type=nonnegative_int, default=None, help="intra-op threads of ONNX Runtime / PyTorch"
    )
    p.add_argument(
        "--warmup", dest="warmup_s", type=nonnegative_float, default=None, help="warm-up seconds (default 1)"
    )
    p.add_argument(
        "--duration", dest="duration_s", type=positive_float, default=None, help="timed seconds (default 10)"
    )
    p.add_argument(
        "--iterations", type=positive_int, default=None, help="a fixed number of timed batches instead"
    )
    p.add_argument(
        "--post-threads",
        dest="post_threads",
        type=positive_int,
        nargs="+",
        default=None,
        help="thread counts for the post-processing measurement (default: 1 and all cores)",
    )
    p.add_argument(
        "--no-e2e",
        dest="end_to_end",
        action="store_false",
        default=None,
        help="skip the end-to-end pipeline run",
    )
    p.add_argument(
        "--slide", type=Path, default=None, help="slide for the end-to-end run (default: synthetic)"
    )
    p.add_argument(
        "--slide-tiles",
        dest="slide_tiles",
        type=positive_int,
        default=None,
        help="synthetic slide size in tiles per side (default 3)",
    )
    p.add_argument(
        "--tissue-area-mm2",
        dest="tissue_area_mm2",
        type=positive_float,
        default=None,
        help="tissue area assumed for the per-slide projection (default 225 = 15 x 15 mm)",
    )
    p.add_argument("--json", type=Path, default=None, help="JSON report path (default bench.json)")
    p.add_argument("--chart", type=Path, default=None, help="PNG chart path (default bench.png)")


def _bench_tiles(n: int, tile_size: int, seed: int):
    from cellvit_trt.export.samples import gate_tiles

    return gate_tiles(n, tile_size, seed=seed)


def _synthetic_slide(folder: Path, tiles: int, tile_size: int, seed: int) -> Path:
    from cellvit_trt.synthetic import write_synthetic_slide

    side = tiles * (tile_size - 64)  # exactly `tiles` x `tiles` tiles at the upstream stride (64 px overlap)
    path = folder / "bench-synthetic-slide.tiff"
    write_synthetic_slide(path, width=side, height=side, mpp=0.25, seed=seed)
    return path


def _end_to_end(s: Any, backend: Any, folder: Path) -> dict[str, Any]:
    from cellvit_trt.runtime.job import run_input
    from cellvit_trt.runtime.settings import RunSettings

    slide = s.slide or _synthetic_slide(folder, s.slide_tiles, backend.tile_size, s.seed)
    rs = RunSettings(
        input=slide,
        model=str(s.model),
        output=folder / "run",
        batch=s.batch,
        outputs=["geojson", "table", "summary"],
        tissue=s.slide is not None,
    )
    out_dir = folder / "run" / slide.stem
    res = run_input(slide, rs, backend, out_dir=out_dir, progress=False, replace_other=True)
    timing = res.stats.to_dict()
    timing.setdefault("backend_wait_fraction", res.stats.backend_wait_fraction)
    timing.setdefault("tiles_per_s", res.stats.tiles_per_s)
    return {
        "input": str(slide) if s.slide else f"synthetic {s.slide_tiles}x{s.slide_tiles}-tile slide",
        "cells": res.cells,
        "timing": timing,
    }


def bench(s: Any) -> dict[str, Any]:
    from cellvit_trt.bench.environment import environment
    from cellvit_trt.bench.measure import measure, measure_postprocess, peak_host_rss_bytes, slide_projection
    from cellvit_trt.runtime.backends import open_backend

    report: dict[str, Any] = {"model": str(s.model), "settings": to_dict(s)}
    if s.end_to_end and s.slide is not None:
        from cellvit_trt.runtime.sources import open_source

        with open_source(s.slide):  # an unreadable slide fails now, not after the timed runs
            pass
    backend = open_backend(
        s.model, s.backend, batch=s.batch, tile_size=s.tile_size, precision=s.precision, threads=s.threads
    )
    with backend:
        report["backend"] = backend.describe()
        report["precision"] = getattr(backend.meta, "precision", None) or s.precision or "fp32"
        images = _bench_tiles(s.batch, backend.tile_size, s.seed)
        m = measure(
            backend.infer,
            images,
            warmup_s=s.warmup_s,
            duration_s=s.duration_s,
            iterations=s.iterations,
            timings=lambda: dict(backend.last_timings),
        )
        report["compute"] = m.to_dict()
        threads = s.post_threads or sorted({1, os.cpu_count() or 1})
        report["postprocess"] = [measure_postprocess(m.outputs, t) for t in threads]
        if s.end_to_end:
            with tempfile.TemporaryDirectory(prefix="cellvit-bench-") as tmp:
                report["end_to_end"] = _end_to_end(s, backend, Path(tmp))
        peak_dev = getattr(backend, "peak_device_bytes", None)
        report["memory"] = {
            "peak_host_rss_mb": peak_host_rss_bytes() / 2**20,
            "peak_device_mb": (peak_dev() / 2**20) if callable(peak_dev) else None,
        }
    e2e = report.get("end_to_end")
    rate, basis = (e2e["timing"]["tiles_per_s"], "end-to-end") if e2e else (m.tiles_per_s, "backend-only")
    stride = backend.tile_size - getattr(backend.meta, "overlap", 64)
    report["projection"] = {**slide_projection(rate, s.tissue_area_mm2, 0.25, stride), "basis": basis}
    report["environment"] = environment()
    return report


def run(args: argparse.Namespace) -> int:
    from cellvit_trt.bench.report import format_table, write_report
    from cellvit_trt.bench.settings import BenchSettings

    s = resolve(BenchSettings, args, section="bench")
    report = bench(s)
    print(format_table(report))
    write_report(report, s.json, s.chart)
    for what, path in (("JSON", s.json), ("chart", s.chart)):
        if path:
            print(f"{what}: {path}")
    return 0
