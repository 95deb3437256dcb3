"""`cellvit-trt serve` vs `cellvit-trt run` on the same slide, same model, same backend, side by side.

    .venv/bin/python benchmarks/bench_serve.py [--model demo] [--rows 3] [--cols 4] [--repeat 2] [--pace 0.5]
        [--fast-rows 0] [--json out]

Side A: `cellvit-trt run SLIDE --no-tissue` (a fresh process; its own summary gives the pipeline's tiles/s
and the elapsed time from opening the slide to the outputs written).
Side B: a `cellvit-trt serve` process (warm backend) and the Python client in this process, which reads the
same slide with OpenSlide at level 0 and streams it in 1024 px tiles (raw RGB): tiles/s from OpenSlide to
SlideResult (client wall time), per-model-tile latency from the send of the last tile covering it to its
TileCells (p50/p99), and the server's RSS (peak and growth). The client sends as fast as it can (then latency
is mostly queueing behind the backend); `--pace 0.5` adds a slide sent at half the backend's pace (a scanner
slower than the model: latency is processing), `--fast-rows R` a 2-tile-wide slide of R rows sent as fast as
possible (server RSS against the slide's size). Both sides alternate `--repeat` times; the ratio uses the
median of each side. Model load, export and warm-up are outside both timings (the service keeps its backend
warm between slides, `run` loads it per process: the run figures exclude that load, they are the pipeline's
own).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def write_slide(path: Path, rows: int, cols: int, stride: int) -> None:
    from cellvit_trt.synthetic import write_synthetic_slide

    write_synthetic_slide(
        path,
        width=cols * stride,
        height=rows * stride,
        mpp=0.25,
        seed=3,
        tile_size=256,
        downsamples=(1, 4),
        compression="jpeg",
        glass_fraction=0.0,
        write_labels=False,
    )


def _command(args, verb: str, out: Path, *extra: str) -> list[str]:
    """`cellvit-trt <verb>` with the same model, backend and outputs on both sides."""
    cmd = [sys.executable, "-m", "cellvit_trt.cli", verb, "-m", args.model, "-o", str(out), *extra]
    cmd += ["--backend", args.backend, "-b", str(args.batch), "--outputs", "cells", "summary"]
    return cmd + (["--threads", str(args.threads)] if args.threads else [])


def run_side(slide: Path, args, out: Path) -> dict:
    cmd = _command(args, "run", out, str(slide), "--no-tissue", "-q")
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    s = json.loads((out / slide.stem / "summary.json").read_text())
    t = s["timing"]
    return {
        "tiles": s["tiles_processed"],
        "cells": s["cells"],
        "elapsed_s": s["elapsed_s"],
        "tiles_per_s": s["tiles_processed"] / s["elapsed_s"],
        "pipeline_tiles_per_s": t["tiles_per_s"],
        "cpu_s": t.get("cpu_s"),
        "process_wall_s": round(wall, 2),
    }


def start_server(args, out: Path, sock: str) -> subprocess.Popen:
    cmd = _command(args, "serve", out, "--listen", sock)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    for line in proc.stdout:
        if "listening on" in line:
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
            return proc
    raise SystemExit(f"the server did not start (exit {proc.wait()})")


def serve_side(
    slide: Path, sock: str, slide_id: str, server: psutil.Process, tile: int, pace: float | None = None
) -> dict:
    """Stream `slide`; `pace`: client tiles per second (a scanner's speed), None = as fast as possible."""
    from cellvit_trt.serve.client import ScannerClient, slide_tiles

    peak = [server.memory_info().rss]
    rss0 = peak[0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            peak[0] = max(peak[0], server.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cpu0 = sum(server.cpu_times()[:2])
    t0 = time.perf_counter()
    w, h, mpp, tiles = slide_tiles(slide, tile)
    with ScannerClient(sock) as client:
        stream = client.open_slide(slide_id, w, h, mpp, layout=(tile, tile))
        t_send = time.perf_counter()
        for i, (x, y, rgb) in enumerate(tiles):
            if pace:
                time.sleep(max(0.0, t_send + i / pace - time.perf_counter()))
            stream.send_rgb(x, y, rgb)
        result = stream.close(timeout=3600)
    wall = time.perf_counter() - t0
    stop.set()
    sampler.join()
    lat = np.array(stream.tile_latency)
    return {
        "tiles": result.tiles_processed,
        "cells": result.cells_total,
        "elapsed_s": round(wall, 3),
        "tiles_per_s": result.tiles_processed / wall,
        "latency_p50_s": float(np.percentile(lat, 50)),
        "latency_p99_s": float(np.percentile(lat, 99)),
        "server_cpu_s": round(sum(server.cpu_times()[:2]) - cpu0, 2),
        "server_rss_peak_mib": round(peak[0] / 2**20, 1),
        "server_rss_growth_mib": round((peak[0] - rss0) / 2**20, 1),
        "slide_pixels_mib": round(w * h * 3 / 2**20, 1),
        "pace_tiles_per_s": pace,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--rows", type=int, default=3)
    ap.add_argument("--cols", type=int, default=4)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--tile", type=int, default=1024, help="the client's tile size")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument(
        "--pace", type=float, default=0.5, help="latency run: scanner pace / backend pace (0: skip)"
    )
    ap.add_argument(
        "--fast-rows", type=int, default=0, help="RSS run: a 2-tile-wide slide this many rows long"
    )
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    os.environ.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".numba_cache"))
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        slide = d / "bench.svs"
        write_slide(slide, args.rows, args.cols, 960)
        run_side(slide, args, d / "warm")  # exports the demo checkpoint once, warms the page cache
        sock = f"unix://{d}/serve.sock"
        proc = start_server(args, d / "served", sock)
        server = psutil.Process(proc.pid)
        try:
            serve_side(slide, sock, "warm", server, args.tile)  # first slide: allocations, caches
            runs, serves = [], []
            for i in range(args.repeat):
                runs.append(run_side(slide, args, d / f"run{i}"))
                serves.append(serve_side(slide, sock, f"s{i}", server, args.tile))
                print(
                    f"round {i}: run {runs[-1]['tiles_per_s']:.3f} tiles/s, "
                    f"serve {serves[-1]['tiles_per_s']:.3f} tiles/s, load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
            paced = None
            if args.pace and serves:  # a scanner slower than the backend: latency is processing, not queueing
                rate = statistics.median(x["tiles_per_s"] for x in serves)
                paced = serve_side(slide, sock, "paced", server, args.tile, pace=args.pace * rate)
                print(
                    f"paced at {args.pace * rate:.3f} tiles/s: latency p50 {paced['latency_p50_s']:.1f} s, "
                    f"p99 {paced['latency_p99_s']:.1f} s",
                    flush=True,
                )
            fast = None
            if args.fast_rows:  # much more than the server may hold, sent as fast as possible
                long_slide = d / "long.svs"
                write_slide(long_slide, args.fast_rows, 2, 960)
                fast = serve_side(long_slide, sock, "fast", server, args.tile)
                print(
                    f"fast client: RSS +{fast['server_rss_growth_mib']} MiB for a "
                    f"{fast['slide_pixels_mib']} MiB slide",
                    flush=True,
                )
        finally:
            proc.terminate()
            proc.wait(60)
    med = {k: statistics.median([r[k] for r in runs] or [float("nan")]) for k in ("tiles_per_s", "elapsed_s")}
    smed = {
        k: statistics.median([s[k] for s in serves] or [float("nan")]) for k in ("tiles_per_s", "elapsed_s")
    }
    report = {
        "slide": f"{args.rows}x{args.cols} tiles of 1024 (stride 960), model {args.model}, {args.backend}",
        "run": runs,
        "serve": serves,
        "ratio_serve_over_run_tiles_per_s": smed["tiles_per_s"] / med["tiles_per_s"],
        "paced": paced,
        "fast_client": fast,
        "loadavg": os.getloadavg(),
    }
    print(json.dumps(report, indent=2))
    print(
        f"\nserve / run tiles/s (medians): {smed['tiles_per_s']:.3f} / {med['tiles_per_s']:.3f} = "
        f"{report['ratio_serve_over_run_tiles_per_s']:.3f}"
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
