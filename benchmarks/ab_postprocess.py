"""A/B of two versions of the post-processing kernels on the tiles of bench_postprocess.py, alternated.

    git worktree add /tmp/old <commit>        # or any other checkout
    NUMBA_CACHE_DIR=.numba_cache .venv/bin/python benchmarks/ab_postprocess.py /tmp/old/src src --rounds 12

Each side runs in its own process (PYTHONPATH = that side's src folder; Numba's cache keys on the source
path, so both sides share NUMBA_CACHE_DIR) on the same maps; the rounds alternate A, B / B, A, three tiles
per turn, each after 256 MB were allocated, written and freed (as the oracle does between two tiles in
bench_postprocess.py, or the model in a pipeline), and the figure per turn is the median of its three
(process CPU time). Printed per case: the
medians of each side and the median of the per-round ratios B / A, which a load change during the run moves
far less than the times themselves (this machine is shared: the same code measures up to 1.5x slower when
other jobs run). Parity is not checked here: the kernel tests and bench_postprocess.py do that.
"""

from __future__ import annotations

import argparse
import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

_WORKER = """
import pickle, sys, time
import numpy as np
from cellvit_trt.kernels import PostProcessor
cases = pickle.load(open(sys.argv[1], "rb"))
pp = PostProcessor()
for maps in cases.values():
    pp.process_tile(*maps)  # compile or load the kernels
print("ready", flush=True)
for line in sys.stdin:
    name, n = line.split()
    took = []
    for _ in range(int(n)):
        # what runs between two tiles in bench_postprocess.py (the oracle) or in a pipeline (the model):
        # large arrays allocated, written and freed; without it a tile finds the previous one's memory warm
        junk = np.ones(64 << 20, np.float32)
        del junk
        t0 = time.process_time()
        pp.process_tile(*cases[name])
        took.append(time.process_time() - t0)
    print(sorted(took)[len(took) // 2] * 1e3, flush=True)
"""


def _spawn(src: Path, cases: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(src)}
    env.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".numba_cache"))
    cmd = [sys.executable, "-c", _WORKER, str(cases)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    if proc.stdout.readline().strip() != "ready":
        raise SystemExit(f"{src}: the worker did not start")
    return proc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", type=Path, help="src folder of version A")
    ap.add_argument("b", type=Path, help="src folder of version B")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--cases", nargs="*", help="subset of: dense medium-real sparse sparse-real empty")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_postprocess import _inputs, build_cases

    cases, skipped = build_cases(args.cases)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cases.pkl"
        tiles = {}
        for name, maps in cases.items():
            _, fg, type_map = _inputs(maps)
            tiles[name] = (fg, maps.hv, type_map)
        with open(path, "wb") as fh:
            pickle.dump(tiles, fh)
        sides = [_spawn(args.a.resolve(), path), _spawn(args.b.resolve(), path)]
        times: dict[str, list[list[float]]] = {name: [[], []] for name in cases}
        for r in range(args.rounds):
            for name in cases:
                for i in (0, 1) if r % 2 == 0 else (1, 0):
                    sides[i].stdin.write(f"{name} 3\n")
                    sides[i].stdin.flush()
                    times[name][i].append(float(sides[i].stdout.readline()))
        for proc in sides:
            proc.stdin.close()
            proc.wait()
    print(f"A = {args.a}, B = {args.b}; CPU ms per tile, {args.rounds} alternated rounds")
    for name, (a, b) in times.items():
        a, b = np.array(a), np.array(b)
        print(f"  {name:12s} A {np.median(a):7.2f}  B {np.median(b):7.2f}  B/A {np.median(b / a):.3f}")
    for s in skipped:
        print(f"  skipped: {s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
