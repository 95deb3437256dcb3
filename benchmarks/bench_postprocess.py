"""Tile post-processing speed: cellvit_trt.kernels vs the cellvit==1.0.9 oracle on the same dense maps.

    NUMBA_CACHE_DIR=.numba_cache .venv/bin/python benchmarks/bench_postprocess.py [--tiles 4] [--size 1024]

Prints, from one run: oracle s/tile and ours s/tile on one thread (OpenCV and PyTorch pinned to one thread on
both sides) and their ratio, in wall time and in process CPU time (steadier on a shared machine), tiles/s of
ours with 1 thread and with a thread pool over all cores (the kernels release the GIL),
and the first-call Numba compile time measured in fresh processes (cold cache, then warm cache).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import types
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter

from cellvit_trt.kernels import PostProcessor
from cellvit_trt.synthetic.targets import make_targets

N_TYPES = 6


def dense_maps(rng: np.random.Generator, size: int, nuclei: int):
    """Network-like maps for a dense tile: packed elliptic nuclei -> HoVer targets -> blur + noise, logits."""
    inst = np.zeros((size, size), np.int32)
    yy, xx = np.mgrid[-10:11, -10:11]
    label = 0
    for _ in range(nuclei):
        cy, cx = rng.integers(0, size, 2)
        ry, rx = rng.uniform(3.0, 8.0, 2)
        th = rng.uniform(0, np.pi)
        u = (xx * np.cos(th) + yy * np.sin(th)) / rx
        v = (-xx * np.sin(th) + yy * np.cos(th)) / ry
        disk = u * u + v * v <= 1
        r0, c0 = cy - 10, cx - 10
        rs, cs = slice(max(r0, 0), min(r0 + 21, size)), slice(max(c0, 0), min(c0 + 21, size))
        d = disk[rs.start - r0 : rs.stop - r0, cs.start - c0 : cs.stop - c0] & (inst[rs, cs] == 0)
        if d.sum() < 12:
            continue
        label += 1
        inst[rs, cs][d] = label
    types_ = rng.integers(1, N_TYPES, label + 1)
    t = make_targets(inst, types_)
    hv = np.stack([gaussian_filter(c, 0.8) for c in t.hv.astype(np.float64)]) + rng.normal(
        0, 0.15, t.hv.shape
    )
    f = 2.0 * t.binary - 1.0
    binary_logits = np.stack([-f, f], -1) * rng.uniform(0.5, 3.0, (size, size, 1)) + rng.normal(
        0, 0.3, (size, size, 2)
    )
    type_logits = rng.normal(0, 1, (size, size, N_TYPES))
    np.put_along_axis(type_logits, t.type_map[..., None].astype(np.int64), 2.5, -1)
    return label, binary_logits.astype(np.float32), type_logits.astype(np.float32), hv.astype(np.float16)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


def _oracle():
    sys.modules.setdefault("ray", types.ModuleType("ray"))
    from cellvit.inference.postprocessing_numpy import DetectionCellPostProcessor

    return DetectionCellPostProcessor(wsi=None, nr_types=N_TYPES)


def _first_call_seconds(cache_dir: str, size: int) -> tuple[float, float]:
    """(wall, CPU) seconds of imports + first process_tile in a fresh process using `cache_dir`."""
    code = (
        "import time,numpy as np;t=time.perf_counter();c=time.process_time();"
        "from cellvit_trt.kernels import PostProcessor;"
        f"r=np.random.default_rng(0);s={size};"
        "fg=(r.random((s,s))<.3).astype(np.uint8);hv=r.normal(0,.5,(2,s,s)).astype(np.float16);"
        "tm=r.integers(0,6,(s,s)).astype(np.uint8);PostProcessor().process_tile(fg,hv,tm);"
        "print(time.perf_counter()-t, time.process_time()-c)"
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    wall, cpu = out.stdout.strip().splitlines()[-1].split()
    return float(wall), float(cpu)


def stage_times(fg: np.ndarray, hv: np.ndarray, tm: np.ndarray, repeat: int = 3) -> dict[str, float]:
    """Best-of-`repeat` CPU milliseconds of each stage of our pipeline on one tile."""
    from cellvit_trt.kernels import PostProcessParams
    from cellvit_trt.kernels.cells import measure_instances
    from cellvit_trt.kernels.energy import open_ellipse, relief_and_markers
    from cellvit_trt.kernels.inputs import as_batch
    from cellvit_trt.kernels.morphology import fill_holes4, label4_components, label4_filtered
    from cellvit_trt.kernels.postprocess import _cell_table
    from cellvit_trt.kernels.watershed import watershed_fast

    p = PostProcessParams()
    out: dict[str, float] = {}

    def run(name, fn, *a):
        best = None
        for _ in range(repeat):
            c0 = time.process_time()
            r = fn(*a)
            dt = time.process_time() - c0
            best = dt if best is None else min(best, dt)
        out[name] = 1000 * best
        return r

    f1, h1, t1, _ = run("checks + float16", as_batch, fg, hv, tm)
    comps = run("foreground label", label4_components, f1[0], p.blob_min_size)
    blb = (comps[0] > 0).view(np.uint8)
    relief, raw = run(
        "relief (Sobel, normalise, blur)", relief_and_markers, h1[0], blb, p.sobel_ksize, 0.4, p.blur_ksize
    )
    filled = run("fill holes", fill_holes4, raw)
    opened = run("opening", open_ellipse, filled, p.opening_size)
    markers = run("marker label", label4_filtered, opened, p.object_size)
    labels, cut = run("watershed", watershed_fast, relief, markers, *comps)
    measured = run("measure + remap", measure_instances, labels, t1[0], int(t1[0].max()) + 1, cut)
    run("contours + table", _cell_table, *measured, p)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiles", type=int, default=4, help="distinct tiles (default 4)")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--nuclei", type=int, default=2600, help="nuclei drawn per tile before overlap rejection")
    ap.add_argument("--repeat", type=int, default=3, help="passes over the tiles for our timing")
    ap.add_argument("--oracle-tiles", type=int, default=None, help="tiles timed for the oracle (default all)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument(
        "--no-compile-time", action="store_true", help="skip the fresh-process compile measurement"
    )
    ap.add_argument("--stages", action="store_true", help="also print CPU ms per stage on the first tile")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args(argv)

    cv2.setNumThreads(1)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        torch = None
    rng = np.random.default_rng(2024)
    tiles = [dense_maps(rng, args.size, args.nuclei) for _ in range(args.tiles)]
    fg = np.stack([np.argmax(_softmax(b), -1).astype(np.uint8) for _, b, _, _ in tiles])
    tm = np.stack([np.argmax(_softmax(t), -1).astype(np.uint8) for _, _, t, _ in tiles])
    hv = np.stack([h for _, _, _, h in tiles])

    pp = PostProcessor()
    pp.process_tile(fg[0], hv[0], tm[0])  # compile / load cache
    t0, c0 = time.perf_counter(), time.process_time()
    n_cells = 0
    for _ in range(args.repeat):
        for i in range(len(tiles)):
            n_cells += len(pp.process_tile(fg[i], hv[i], tm[i]).cells)
    ours = (time.perf_counter() - t0) / (args.repeat * len(tiles))
    ours_cpu = (time.process_time() - c0) / (args.repeat * len(tiles))
    cells_per_tile = n_cells / (args.repeat * len(tiles))

    oracle_s = oracle_cpu = None
    if torch is not None:
        oracle = _oracle()
        k = args.oracle_tiles or len(tiles)
        total = cpu = 0.0
        for i in range(k):
            _, b, t, h = tiles[i]
            d = {
                "nuclei_binary_map": torch.from_numpy(_softmax(b)[None]),
                "nuclei_type_map": torch.from_numpy(_softmax(t)[None]),
                "hv_map": torch.from_numpy(h.astype(np.float32).transpose(1, 2, 0)[None].copy()),
            }
            t0, c0 = time.perf_counter(), time.process_time()
            oracle.post_process_batch(d)
            total += time.perf_counter() - t0
            cpu += time.process_time() - c0
        oracle_s, oracle_cpu = total / k, cpu / k

    def throughput(workers: int) -> tuple[float, float]:
        """(tiles/s, CPU seconds per wall second); CPU/wall > 1 means threads run outside the GIL."""
        jobs = [i % len(tiles) for i in range(max(4 * workers, 2 * len(tiles)))]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(lambda i: pp.process_tile(fg[i], hv[i], tm[i]), jobs[:workers]))
            t0, c0 = time.perf_counter(), time.process_time()
            list(pool.map(lambda i: pp.process_tile(fg[i], hv[i], tm[i]), jobs))
            wall = time.perf_counter() - t0
            return len(jobs) / wall, (time.process_time() - c0) / wall

    tps1, busy1 = throughput(1)
    tpsn, busyn = throughput(args.workers)
    compile_cold = compile_warm = None
    if not args.no_compile_time:
        with tempfile.TemporaryDirectory() as tmp:
            compile_cold = _first_call_seconds(tmp, 256)
            compile_warm = _first_call_seconds(tmp, 256)

    fig = {
        "tile": f"{args.size}x{args.size}",
        "tiles": len(tiles),
        "cells_per_tile": round(cells_per_tile, 1),
        "oracle_s_per_tile": oracle_s,
        "ours_s_per_tile": ours,
        "speedup": (oracle_s / ours) if oracle_s else None,
        "oracle_cpu_s_per_tile": oracle_cpu,
        "ours_cpu_s_per_tile": ours_cpu,
        "speedup_cpu_time": (oracle_cpu / ours_cpu) if oracle_cpu else None,
        "tiles_per_s_1_thread": tps1,
        f"tiles_per_s_{args.workers}_threads": tpsn,
        f"cpu_per_wall_{args.workers}_threads": busyn,
        "first_call_wall_cpu_s_cold_cache": compile_cold,
        "first_call_wall_cpu_s_warm_cache": compile_warm,
        "cpu_count": os.cpu_count(),
    }
    print(
        f"dense tiles {fig['tile']}, {len(tiles)} tiles, {cells_per_tile:.0f} cells/tile "
        "(one thread each side)"
    )
    print(f"  {'':41s}   wall s/tile   CPU s/tile")
    if oracle_s:
        print(f"  oracle cellvit==1.0.9 post_process_batch : {oracle_s:11.4f} {oracle_cpu:12.4f}")
    print(f"  cellvit_trt.kernels PostProcessor        : {ours:11.4f} {ours_cpu:12.4f}")
    if oracle_s:
        print(
            f"  speed-up                                 : {oracle_s / ours:10.1f}x "
            f"{oracle_cpu / ours_cpu:11.1f}x"
        )
    print(f"  throughput 1 thread                      : {tps1:8.2f} tiles/s (CPU/wall {busy1:.2f})")
    print(
        f"  throughput {args.workers} threads (thread pool)       : {tpsn:8.2f} tiles/s ({tpsn / tps1:.2f}x, "
        f"CPU/wall {busyn:.2f})"
    )
    if compile_cold is not None:
        print(
            f"  first call, fresh process, cold cache    : {compile_cold[0]:8.2f} s wall, "
            f"{compile_cold[1]:.2f} s CPU "
            "(Numba compile + imports)"
        )
        print(
            f"  first call, fresh process, warm cache    : {compile_warm[0]:8.2f} s wall, "
            f"{compile_warm[1]:.2f} s CPU "
            "(cache load + imports)"
        )
    if args.stages:
        stages = stage_times(fg[0], hv[0], tm[0])
        fig["stages_cpu_ms"] = stages
        print("  stages, CPU ms on tile 0 (best of 3):")
        for name, ms in stages.items():
            print(f"    {name:33s} {ms:7.2f}")
        print(f"    {'sum':33s} {sum(stages.values()):7.2f}")
    if args.json:
        from cellvit_trt.io import write_json

        write_json(args.json, fig)
    return 0


if __name__ == "__main__":
    sys.exit(main())
