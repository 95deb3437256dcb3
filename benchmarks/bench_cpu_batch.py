"""Does a larger batch speed up ONNX Runtime on a CPU? Wall and CPU seconds per tile at batch 1, 2 and 4, in
one process, the batch sizes alternating round by round (so load drifts hit all of them alike).

    .venv/bin/python benchmarks/bench_cpu_batch.py [--model demo] [--threads 1] [--rounds 5]

Each round pushes the same 4 synthetic tissue tiles through the backend as 4 x 1, 2 x 2 and 1 x 4; medians
over rounds are printed with the load average. CPU seconds are the process's (all threads): on a shared
machine they are the fairer figure, wall seconds depend on what else runs.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from cellvit_trt.export.samples import gate_tiles
from cellvit_trt.runtime.backends import open_backend

BATCHES = (1, 2, 4)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--tile-size", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: its default)")
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    n = max(BATCHES)
    with open_backend(a.model, "onnxruntime", batch=n, tile_size=a.tile_size, threads=a.threads) as be:
        tiles = gate_tiles(n, be.tile_size, seed=1)
        for b in BATCHES:  # first runs allocate: not timed
            be.infer(tiles[:b])
        wall: dict[int, list[float]] = {b: [] for b in BATCHES}
        cpu: dict[int, list[float]] = {b: [] for b in BATCHES}
        loads = []
        for _ in range(a.rounds):
            for b in BATCHES:
                t0, c0 = time.perf_counter(), time.process_time()
                for _ in range(n // b):
                    be.infer(tiles[:b])
                wall[b].append((time.perf_counter() - t0) / n)
                cpu[b].append((time.process_time() - c0) / n)
            loads.append(os.getloadavg()[0])
    print(
        f"{a.model} @ {a.tile_size} px, ONNX Runtime CPU, threads {a.threads or 'default'}, "
        f"{a.rounds} rounds, load {min(loads):.1f}-{max(loads):.1f}"
    )
    base = np.median(cpu[1])
    for b in BATCHES:
        print(
            f"batch {b}: wall {np.median(wall[b]):.2f} s/tile, CPU {np.median(cpu[b]):.2f} s/tile "
            f"({np.median(cpu[b]) / base:.2f}x batch 1's CPU)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
