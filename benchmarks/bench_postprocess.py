"""Tile post-processing speed: cellvit_trt.kernels vs the cellvit==1.0.9 oracle on five kinds of 1024 px tile.

    NUMBA_CACHE_DIR=.numba_cache .venv/bin/python benchmarks/bench_postprocess.py [--rounds 7] [--json f.json]

Cases, all 1024 x 1024, maps made as tests/kernels/synth_maps.py makes them (instance map -> HoVer targets ->
blur + noise; binary and type logits with noise):
  dense        synthetic ellipses, about 1,400 nuclei
  medium-real  4 x 4 mosaic of the 15 annotated NuCLS H&E instance masks (about 700 real nucleus shapes)
  sparse       synthetic ellipses, at most 350 nuclei
  sparse-real  4 NuCLS masks on an otherwise empty tile (about 150 real nucleus shapes)
  empty        no nuclei: background logits with noise and a few isolated flipped pixels
The real-shape cases need shared/data/real (tests find it the same way) and are skipped without it.

The oracle's NumPy is 1.26 (cellvit 1.0.9 requires numpy<2). Where that NumPy dispatches to AVX-512, its
np.sort is an AVX-512 quicksort that is about 10x slower on arrays of mostly equal values (1M int32, 90 %
zeros: 111 ms against 12 ms with the dispatch off), and the oracle sorts whole label maps in np.unique: on
such a host it runs up to 1.8x slower than with AVX-512 off, which would flatter every ratio. So by default
the benchmark re-executes itself with NPY_DISABLE_CPU_FEATURES naming NumPy's AVX-512 features (the
oracle's faster setting; ours barely uses NumPy), and prints which; --numpy-avx512 keeps NumPy as found.
Both sides run on one thread (OpenCV and PyTorch pinned to one thread). For each case the two sides are
first checked to agree cell for cell (instance map and every cell field), then timed alternately for
--rounds rounds; printed are the median process CPU time and wall time per tile of each side and the ratios
of the medians. CPU time is the figure to quote on a shared machine; the load average is printed at the
start and the end. --threads also prints tiles/s of ours with a thread pool (the kernels release the GIL),
--compile the first-call time in fresh processes (cold Numba cache, then warm), --profile CASE the CPU time
per kernel on that case's tile, --whole-tile the CPU time of our whole-tile path (every pixel, the path
before the region restriction and the fallback where the region kernels are not proven identical).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the map generators of the parity tests are the benchmark's too

from tests.kernels.agreement import FIELDS, field_agreement  # noqa: E402
from tests.kernels.real_shapes import mosaic, nucls_masks, scatter  # noqa: E402
from tests.kernels.synth_maps import maps_from_instances, random_instances  # noqa: E402

from cellvit_trt.kernels import PostProcessor  # noqa: E402

SIZE = 1024


def build_cases(only: list[str] | None = None) -> tuple[dict, list[str]]:
    """{name: Maps}, and the names skipped (with why)."""
    masks = nucls_masks()
    rng = np.random.default_rng(2024)
    makers = {
        "dense": lambda: random_instances(rng, SIZE, SIZE, 2600, 3.0, 8.0, 0.0, overlap=False),
        "medium-real": lambda: mosaic(masks, 4, 4),
        "sparse": lambda: random_instances(rng, SIZE, SIZE, 300, 3.0, 8.0, 0.0, overlap=False),
        "sparse-real": lambda: scatter(
            masks, (SIZE, SIZE), [(2, 40, 60), (6, 90, 700), (9, 600, 200), (13, 700, 720)]
        ),
        "empty": lambda: np.zeros((SIZE, SIZE), np.int32),
    }
    cases, skipped = {}, []
    for name, make in makers.items():
        if only and name not in only:
            continue
        if name.endswith("-real") and masks is None:
            skipped.append(f"{name} (shared/data/real/nucls15 not found)")
            continue
        flip = 0.0005 if name == "empty" else 0.0
        cases[name] = maps_from_instances(rng, name, make(), fg_flip=flip)
    return cases, skipped


def _inputs(maps):
    """Oracle dict (softmax BHWC tensors, raw hv) and our argmax inputs, as the parity tests feed them."""
    from tests.kernels.oracle import softmax_inputs

    d, fg, type_map, _ = softmax_inputs(maps)
    return d, fg, type_map


def _oracle():
    from tests.upstream_oracle import import_upstream

    import_upstream()  # stubs ray, which the tile path never uses
    from cellvit.inference.postprocessing_numpy import DetectionCellPostProcessor

    return DetectionCellPostProcessor(wsi=None, nr_types=6)


def _agree(ours, o_inst, o_cells) -> bool:
    if not np.array_equal(ours.inst_map, o_inst):
        return False
    agree = field_agreement(ours.cells.to_upstream_dict(), o_cells)
    return all(agree[f] == 1.0 for f in FIELDS)


def _timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def _whole_tile_path():
    """Context in which PostProcessor runs its whole-tile path (`postprocess.instance_map_full`)."""
    import contextlib

    import cellvit_trt.kernels.postprocess as postprocess

    @contextlib.contextmanager
    def ctx():
        saved = postprocess.region_path_ok
        postprocess.region_path_ok = lambda params: False
        try:
            yield
        finally:
            postprocess.region_path_ok = saved

    return ctx()


def run_case(name, maps, oracle, pp: PostProcessor, rounds: int, whole_tile: bool = False) -> dict:
    d, fg, tm = _inputs(maps)
    o_inst, o_cells = oracle.post_process_batch(d)
    ours = pp.process_tile(fg, maps.hv, tm)  # also compiles / loads the kernels
    identical = _agree(ours, o_inst[0].numpy().astype(np.int32), o_cells[0])
    o_wall, o_cpu, u_wall, u_cpu = [], [], [], []
    for _ in range(rounds):  # alternate, so that a load change hits both sides
        _, w, c = _timed(lambda: oracle.post_process_batch(d))
        o_wall.append(w)
        o_cpu.append(c)
        _, w, c = _timed(lambda: pp.process_tile(fg, maps.hv, tm))
        u_wall.append(w)
        u_cpu.append(c)
    med = {k: float(np.median(v)) for k, v in (("ow", o_wall), ("oc", o_cpu), ("uw", u_wall), ("uc", u_cpu))}
    extra = {}
    if whole_tile:  # the same kernels over the whole tile (the path before regions), for comparison
        with _whole_tile_path():
            pp.process_tile(fg, maps.hv, tm)
            cpu = [_timed(lambda: pp.process_tile(fg, maps.hv, tm))[2] for _ in range(rounds)]
        extra = {
            "whole_tile_cpu_s": float(np.median(cpu)),
            "region_vs_whole_tile_cpu": float(np.median(cpu)) / med["uc"],
        }
    return {
        "case": name,
        "nuclei_true": int(maps.gt_inst.max()),
        "cells": len(ours.cells),
        "instances": ours.n_instances,
        "identical": bool(identical),
        "oracle_wall_s": med["ow"],
        "oracle_cpu_s": med["oc"],
        "ours_wall_s": med["uw"],
        "ours_cpu_s": med["uc"],
        "speedup_wall": med["ow"] / med["uw"],
        "speedup_cpu": med["oc"] / med["uc"],
        "ours_cpu_s_all": u_cpu,
        "oracle_cpu_s_all": o_cpu,
        **extra,
    }


def throughput(pp: PostProcessor, tiles: list, workers: int) -> tuple[float, float]:
    """(tiles/s, CPU seconds per wall second) of ours over `tiles` with a thread pool of `workers`."""
    jobs = [tiles[i % len(tiles)] for i in range(max(4 * workers, 2 * len(tiles)))]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda t: pp.process_tile(*t), jobs[:workers]))
        t0, c0 = time.perf_counter(), time.process_time()
        list(pool.map(lambda t: pp.process_tile(*t), jobs))
        wall = time.perf_counter() - t0
        return len(jobs) / wall, (time.process_time() - c0) / wall


def first_call_seconds(cache_dir: str, size: int) -> tuple[float, float]:
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


def profile_kernels(pp: PostProcessor, tile: tuple, repeat: int = 10) -> list[tuple[str, float]]:
    """CPU ms per tile of each function (kernels are compiled functions, so each shows as one entry)."""
    import cProfile
    import pstats

    prof = cProfile.Profile(timer=time.process_time)
    prof.enable()
    for _ in range(repeat):
        pp.process_tile(*tile)
    prof.disable()
    stats = pstats.Stats(prof).stats
    rows = [(f"{Path(k[0]).name}:{k[2]}", v[2] * 1000 / repeat) for k, v in stats.items()]
    return sorted(rows, key=lambda r: -r[1])


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def _numpy_avx512() -> list[str]:
    """NumPy's AVX-512 dispatch targets active in this process (empty off x86 or where disabled)."""
    umath = (getattr(np, "_core", None) or np.core)._multiarray_umath
    found = umath.__cpu_features__
    return [name for name in umath.__cpu_dispatch__ if name.startswith("AVX512") and found.get(name)]


def _without_numpy_avx512(argv: list[str] | None) -> None:
    """Re-execute this script with NumPy's AVX-512 dispatch off (module doc), unless already off."""
    features = _numpy_avx512()
    if not features or os.environ.get("NPY_DISABLE_CPU_FEATURES"):
        return
    env = {**os.environ, "NPY_DISABLE_CPU_FEATURES": " ".join(features)}
    args = sys.argv[1:] if argv is None else argv
    os.execve(sys.executable, [sys.executable, str(Path(__file__).resolve()), *args], env)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7, help="timed rounds per case and side (default 7)")
    ap.add_argument("--cases", nargs="*", help="subset of: dense medium-real sparse sparse-real empty")
    ap.add_argument("--threads", type=int, default=0, help="also time ours with a pool of this many threads")
    ap.add_argument(
        "--whole-tile", action="store_true", help="also time our whole-tile path (before regions)"
    )
    ap.add_argument("--compile", action="store_true", help="also time the first call in fresh processes")
    ap.add_argument("--profile", metavar="CASE", help="also print CPU ms per kernel on this case's tile")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    ap.add_argument(
        "--numpy-avx512",
        action="store_true",
        help="keep NumPy's AVX-512 dispatch (its slow np.sort on label maps slows the oracle; module doc)",
    )
    args = ap.parse_args(argv)
    if not args.numpy_avx512:
        _without_numpy_avx512(argv)

    cv2.setNumThreads(1)
    import torch

    torch.set_num_threads(1)
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    cpu = platform.processor() or platform.machine()
    print(f"start: {start}  load: {_load()}  cpus: {os.cpu_count()}  {cpu}")
    avx512 = _numpy_avx512()
    disabled = os.environ.get("NPY_DISABLE_CPU_FEATURES", "")
    numpy_mode = f"AVX-512 dispatch on ({', '.join(avx512)})" if avx512 else "no AVX-512 dispatch"
    if disabled:
        numpy_mode += f"; NPY_DISABLE_CPU_FEATURES={disabled}"
    print(f"numpy {np.__version__}: {numpy_mode}")
    cases, skipped = build_cases(args.cases)
    oracle, pp = _oracle(), PostProcessor()
    results = [run_case(name, maps, oracle, pp, args.rounds, args.whole_tile) for name, maps in cases.items()]
    print(f"tile post-processing, {SIZE}x{SIZE}, one thread each side, median of {args.rounds} rounds")
    print(
        f"  {'case':12s} {'nuclei':>6s} {'cells':>6s} {'identical':>9s}   {'oracle CPU s':>12s} "
        f"{'ours CPU s':>10s} {'CPU x':>6s}   {'oracle wall':>11s} {'ours wall':>9s} {'wall x':>6s}"
    )
    for r in results:
        print(
            f"  {r['case']:12s} {r['nuclei_true']:6d} {r['cells']:6d} "
            f"{'yes' if r['identical'] else 'NO':>9s}   "
            f"{r['oracle_cpu_s']:12.4f} {r['ours_cpu_s']:10.4f} {r['speedup_cpu']:5.1f}x   "
            f"{r['oracle_wall_s']:11.4f} {r['ours_wall_s']:9.4f} {r['speedup_wall']:5.1f}x"
        )
    if args.whole_tile:
        print(
            "  our whole-tile path (same kernels, every pixel), CPU s/tile and region path speed-up over it:"
        )
        for r in results:
            print(f"    {r['case']:12s} {r['whole_tile_cpu_s']:8.4f}  {r['region_vs_whole_tile_cpu']:5.2f}x")
    for s in skipped:
        print(f"  skipped: {s}")
    fig = {
        "start": start,
        "load_start": _load(),
        "cases": results,
        "skipped": skipped,
        "cpus": os.cpu_count(),
        "numpy": {"version": np.__version__, "avx512_dispatch": avx512, "disabled": disabled},
    }
    if args.threads and "dense" in cases:
        d, fg, tm = _inputs(cases["dense"])
        tile = [(fg, cases["dense"].hv, tm)]
        tps1, busy1 = throughput(pp, tile, 1)
        tpsn, busyn = throughput(pp, tile, args.threads)
        fig["throughput"] = {"1": tps1, str(args.threads): tpsn, "cpu_per_wall": busyn}
        print(
            f"  dense throughput: 1 thread {tps1:.2f} tiles/s; {args.threads} threads {tpsn:.2f} tiles/s "
            f"({tpsn / tps1:.2f}x, CPU/wall {busyn:.2f})"
        )
    if args.compile:
        with tempfile.TemporaryDirectory() as tmp:
            cold = first_call_seconds(tmp, 256)
            warm = first_call_seconds(tmp, 256)
        fig["first_call_cold_wall_cpu_s"], fig["first_call_warm_wall_cpu_s"] = cold, warm
        print(
            f"  first call, fresh process: cold cache {cold[0]:.2f} s wall / {cold[1]:.2f} s CPU (compile), "
            f"warm cache {warm[0]:.2f} s / {warm[1]:.2f} s (load)"
        )
    if args.profile in cases:
        d, fg, tm = _inputs(cases[args.profile])
        rows = profile_kernels(pp, (fg, cases[args.profile].hv, tm))
        fig["profile_cpu_ms"] = {"case": args.profile, **dict(rows[:20])}
        print(f"  CPU ms per {args.profile} tile by function (cProfile, top 15):")
        for name, ms in rows[:15]:
            print(f"    {name:48s} {ms:7.2f}")
    end = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(f"end: {end}  load: {_load()}")
    fig["end"], fig["load_end"] = end, _load()
    if args.json:
        from cellvit_trt.io import write_json

        write_json(args.json, fig)
    return 0 if all(r["identical"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
