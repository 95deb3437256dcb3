"""Scale-out on this machine: plain `cellvit-trt run` vs `--ray` with 1 and N workers, same slides.

    .venv/bin/python benchmarks/bench_ray.py [--slides 4] [--grid 3] [--tile 1024] [--repeats 1] [--workdir D]

Slides: synthetic Aperio slides (all tissue) of grid x grid tiles of `tile` px (the demo model exported to a
`tile` px ONNX graph, run by ONNX Runtime on the CPU). Every run is the CLI in a process of its own, as a user
starts it; Ray is started by the CLI (`--ray` without ADDRESS) and stopped at its end.

Printed per run: wall time, CPU time (the whole process tree: driver, Ray's daemons, its workers; sampled
every 0.2 s, so the last moments of short-lived processes are missed), the time
to connect and to get the first worker ready, slides/hour, and the Ray overhead per slide:

    per-slide time = (dispatch wall - start-up) / slides * workers   (Ray: what a slide costs a worker)
                   = wall of the slides / slides                      (plain: the sum of run.json's seconds)
    overhead       = Ray per-slide time / plain per-slide time - 1    (1 worker with all the CPUs)
    Ray s/slide    = ((dispatch wall - start-up) x workers - sum of the slides' seconds) / slides
                     (what Ray itself adds per slide, whatever the machine's load does to the slides)

with the machine's load average before and after each run (the machine may be shared: ratios measured in one
run, side by side, are what to compare). Cells are checked identical across the runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tree_cpu(proc: subprocess.Popen, seen: dict[int, float]) -> None:
    """CPU seconds of the driver and every process below it (Ray's daemons and workers are not reaped by
    us, so getrusage(RUSAGE_CHILDREN) would miss them): the last reading of each PID."""
    import psutil

    try:
        root = psutil.Process(proc.pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return
    for p in procs:
        try:
            t = p.cpu_times()
            seen[p.pid] = t.user + t.system
        except psutil.Error:
            continue


def make_slides(folder: Path, n: int, grid: int, tile: int) -> list[Path]:
    from cellvit_trt.synthetic import write_synthetic_slide

    stride = tile - 64  # 32 px overlap on each side, as upstream
    side = (grid - 1) * stride + tile - 64  # grid x grid tiles exactly
    paths = []
    for i in range(n):
        path = folder / f"slide{i}.svs"
        if not path.is_file():
            write_synthetic_slide(
                path, width=side, height=side, mpp=0.25, seed=100 + i, tile_size=256, glass_fraction=0.0,
                write_labels=False, downsamples=(1, 4),
            )  # fmt: skip
        paths.append(path)
    return paths


def run_cli(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall s, CPU s of the process tree, sampled every 0.2 s) of `cellvit-trt ARGS`."""
    seen: dict[int, float] = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cellvit_trt.cli", *args], stdout=subprocess.DEVNULL, stderr=err, env=env,
            cwd=ROOT,
        )  # fmt: skip
        while proc.poll() is None:
            tree_cpu(proc, seen)
            time.sleep(0.2)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            err.seek(0)
            raise SystemExit(
                f"cellvit-trt {' '.join(args)} failed ({proc.returncode}):\n{err.read()[-3000:]}"
            )
    return wall, sum(seen.values())


def cells(out: Path, name: str) -> str:
    data = json.loads((out / name / "cells.json").read_text())["cells"]
    return json.dumps(sorted(json.dumps({k: v for k, v in c.items() if k != "cell_id"}) for c in data))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slides", type=int, default=4)
    ap.add_argument("--grid", type=int, default=3, help="tiles per side of each slide")
    ap.add_argument("--tile", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=1, help="runs of each configuration, interleaved")
    ap.add_argument(
        "--batch", type=int, default=1, help="tiles per batch (1: a 1024 px FP32 batch on ONNX Runtime "
        "takes about 1 GB; several workers share the machine's memory)",
    )  # fmt: skip
    ap.add_argument(
        "--workdir", type=Path, default=None, help="keep slides and the graph here (default: temp)"
    )
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_ray"))
    work.mkdir(parents=True, exist_ok=True)
    from cellvit_trt.runtime.backends import demo_checkpoint, export_cached

    onnx = export_cached(demo_checkpoint(), args.tile, "fp32", cache_dir=work / "onnx", gate=False)
    slides = make_slides(work / "slides", args.slides, args.grid, args.tile)
    cpus = os.cpu_count() or 1
    ray_tmp = Path(tempfile.mkdtemp(prefix="r", dir="/tmp"))  # Ray's socket paths must stay short
    env = {
        **os.environ,
        "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR", str(ROOT / ".numba_cache")),
        "RAY_TMPDIR": str(ray_tmp),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    common = ["-m", str(onnx), "--backend", "onnxruntime", "-b", str(args.batch), "-q"]
    common += ["--outputs", "cells", "summary"]

    def ray(workers: int, each: int) -> list[str]:
        return ["--ray", "--ray-workers", str(workers), "--ray-cpus-per-slide", str(each)]

    configs = [
        ("plain cellvit-trt run", 1, []),
        (f"--ray, 1 worker x {cpus} CPUs", 1, ray(1, cpus)),
        (f"--ray, {cpus} workers x 1 CPU", cpus, ray(cpus, 1)),
    ]
    print(
        f"{args.slides} slides of {args.grid}x{args.grid} tiles of {args.tile} px, demo model (ONNX Runtime, "
        f"CPU, batch {args.batch}), {cpus} CPUs; Ray {_ray_version()}"
    )
    head = (
        f"{'run':<28} {'wall s':>7} {'CPU s':>7} {'CPU/sl':>7} {'connect':>8} {'startup':>8} {'s/slide':>8}"
        f" {'slides/h':>9} {'steady/h':>9} {'overhead':>9} {'Ray s/sl':>9}  load before/after"
    )
    print(head)
    reference, plain_slide = None, None
    for rep in range(args.repeats):
        for label, workers, extra in configs:
            out = work / f"out-{rep}-{workers}-{'ray' if extra else 'plain'}"
            shutil.rmtree(out, ignore_errors=True)
            load0 = os.getloadavg()[0]
            wall, cpu = run_cli(["run", *map(str, slides), "-o", str(out), *common, *extra], env)
            load1 = os.getloadavg()[0]
            job = json.loads((out / "run.json").read_text())
            names = [e["output_name"] for e in job["inputs"]]
            found = {n: cells(out, n) for n in names}
            if reference is None:
                reference = found
            assert found == reference, f"{label}: cells differ from the first run"
            ex = job.get("executor")
            if ex is None:
                per_slide = sum(e["seconds"] for e in job["inputs"]) / len(names)
                plain_slide = per_slide
                connect = startup = gap = "-"
                overhead = "-"
            else:
                per_slide = (ex["wall_s"] - ex["startup_s"]) / len(names) * workers
                connect, startup = f"{ex['connect_s']:.1f}", f"{ex['startup_s']:.1f}"
                # the driver's share: dispatch wall that no worker spent inside a slide
                busy = sum(e["seconds"] for e in job["inputs"])
                gap = f"{((ex['wall_s'] - ex['startup_s']) * workers - busy) / len(names):.2f}"
                overhead = (
                    f"{100 * (per_slide / plain_slide - 1):+.1f}%" if workers == 1 and plain_slide else "-"
                )
            print(
                f"{label:<28} {wall:7.1f} {cpu:7.1f} {cpu / len(names):7.1f} {connect:>8} {startup:>8} "
                f"{per_slide:8.2f} {3600 * len(names) / wall:9.0f} {3600 * workers / per_slide:9.0f} "
                f"{overhead:>9} {gap:>9}  {load0:.1f}/{load1:.1f}"
            )
    print(
        "s/slide: a worker's seconds per slide (Ray: dispatch wall less start-up, x workers); slides/h: "
        "from the process wall (start-up included); steady/h: workers / s/slide (no start-up); overhead: "
        "1-worker Ray vs plain, per slide; Ray s/sl: seconds per slide no worker spent in a slide (dispatch, "
        "results, the last slides' imbalance across workers)."
    )
    shutil.rmtree(ray_tmp, ignore_errors=True)
    return 0


def _ray_version() -> str:
    try:
        import ray

        return ray.__version__
    except ImportError:
        return "not installed (pip install 'cellvit-trt[ray]')"


if __name__ == "__main__":
    raise SystemExit(main())
