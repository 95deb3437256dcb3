"""Peak memory of the commands in issue 13's table, measured on this machine (optionally against a baseline).

    .venv/bin/python benchmarks/bench_memory.py --work /tmp/bench-memory [--baseline-src ../main/src]
        [--slides 2 3 4 6] [--calibration-tiles 16 128] [--only run bench export]

Each command runs in its own process (`cellvit-trt ...` through `python -c`, so it can report its own
`ru_maxrss`); a thread polls the RSS of that process and its children every 20 ms (psutil), so the figure
includes the footprint probe. `--baseline-src` runs the same commands with another checkout's `src` first
on PYTHONPATH (same virtual environment), so before/after come from one script on one machine. Load average
and CPU seconds are printed beside every figure. Inputs (written once into --work): synthetic pyramidal slides
of n x n tiles of 1024 px at the upstream stride (960 px), the demo model exported to FP32/FP16 ONNX at 1024
px, and a calibration slide with enough tissue tiles.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

STRIDE = 960
# The process's own peak is VmHWM, not ru_maxrss: ru_maxrss carries the parent's resident set at fork
# into the child (this script's own, after it wrote the slides), which hid small peaks behind ~3 GB.
WRAP = (
    "import sys\nfrom cellvit_trt.cli import main\nrc = main(sys.argv[1:])\n"
    "hwm = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:')]\n"
    "print('SELF_MAXRSS_KB', hwm[0] if hwm else 0, flush=True)\nsys.exit(rc)"
)


def measure(args: list[str], env: dict[str, str], log: Path) -> dict:
    t0, r0 = time.time(), resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()[0]
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-c", WRAP, *args], stdout=subprocess.PIPE, stderr=fh, text=True, env=env
        )
        peak = [0]

        def poll() -> None:
            p = psutil.Process(proc.pid)
            while proc.poll() is None:
                try:
                    rss = p.memory_info().rss + sum(
                        c.memory_info().rss for c in p.children(recursive=True) if c.is_running()
                    )
                    peak[0] = max(peak[0], rss)
                except psutil.Error:
                    pass
                time.sleep(0.02)

        th = threading.Thread(target=poll, daemon=True)
        th.start()
        out, _ = proc.communicate()
        th.join()
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    self_kb = int(out.split("SELF_MAXRSS_KB")[1].split()[0]) if "SELF_MAXRSS_KB" in out else 0
    return {
        "rc": proc.returncode,
        "peak_tree_gb": round(peak[0] / 1e9, 2),
        "peak_self_gb": round(self_kb * 1024 / 1e9, 2),
        "wall_s": round(time.time() - t0, 1),
        "cpu_s": round(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime, 1),
        "load_1min": round(load, 2),
    }


def prepare(work: Path, slides: list[int], calib_tiles: int) -> dict:
    from cellvit_trt.data import demo_checkpoint_path
    from cellvit_trt.export import ExportSettings, export
    from cellvit_trt.synthetic import write_synthetic_slide

    work.mkdir(parents=True, exist_ok=True)
    out = {"slides": {}}
    for n in sorted(set(slides) | {max(3, int((calib_tiles * 1.3) ** 0.5) + 1)}):
        path = work / f"slide{n}x{n}.tiff"
        if not path.exists():
            write_synthetic_slide(
                path,
                width=n * STRIDE,
                height=n * STRIDE,
                mpp=0.25,
                seed=0,
                glass_fraction=0.05,
                write_labels=False,
            )
        out["slides"][n] = path
    out["calibration"] = out["slides"][max(out["slides"])]
    for precision in ("fp32", "fp16"):
        path = work / f"demo.{precision}.onnx"
        if not path.exists():
            export(ExportSettings(checkpoint=Path(demo_checkpoint_path()), output=path, precision=precision))
        out[precision] = path
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--baseline-src", type=Path, default=None, help="another checkout's src/ (e.g. main)")
    ap.add_argument("--slides", type=int, nargs="+", default=[2, 3, 4, 6])
    ap.add_argument("--calibration-tiles", type=int, nargs="+", default=[16, 128])
    ap.add_argument(
        "--only", nargs="+", default=["run", "bench", "export"], choices=["run", "bench", "export"]
    )
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    inputs = prepare(a.work, a.slides, max(a.calibration_tiles))
    sides = [("this checkout", None)] + ([("baseline", a.baseline_src.resolve())] if a.baseline_src else [])
    cases: list[tuple[str, list[str]]] = []
    fp32 = str(inputs["fp32"])
    if "run" in a.only:
        for n in a.slides:
            cases.append((f"run {n}x{n}, default batch", ["run", str(inputs["slides"][n]), "-m", fp32]))
        for n in a.slides:
            cases.append((f"run {n}x{n}, -b 8", ["run", str(inputs["slides"][n]), "-m", fp32, "-b", "8"]))
        for n in (3, 6):
            if n in a.slides:
                cases.append((f"run {n}x{n}, -b 1", ["run", str(inputs["slides"][n]), "-m", fp32, "-b", "1"]))
    if "bench" in a.only:
        cases.append(("bench demo.fp16.onnx --batch 8", ["bench", str(inputs["fp16"]), "--batch", "8"]))
    if "export" in a.only:
        for t in a.calibration_tiles:
            cases.append(
                (
                    f"export --precision int8, {t} calibration tiles",
                    [
                        "export",
                        str(demo_ckpt()),
                        "--precision",
                        "int8",
                        "--calibration",
                        str(inputs["calibration"]),
                        "--calibration-tiles",
                        str(t),
                    ],
                )
            )
    results = []
    for label, args in cases:
        for side, src in sides:
            env = dict(os.environ)
            if src is not None:
                env["PYTHONPATH"] = f"{src}{os.pathsep}{env.get('PYTHONPATH', '')}"
            out_dir = a.work / "out" / side.replace(" ", "-") / label.replace(" ", "_").replace(",", "")
            out_dir.mkdir(parents=True, exist_ok=True)
            full = [*args, "-o", str(out_dir / ("model.onnx" if args[0] == "export" else "run"))]
            if args[0] == "bench":
                full = [*args, "--json", str(out_dir / "bench.json"), "--chart", str(out_dir / "bench.png")]
            full += ["-q"] if args[0] == "run" else []
            env["CELLVIT_TRT_CACHE"] = str(a.work / "cache" / side.replace(" ", "-"))
            m = measure(full, env, out_dir / "log.txt")
            m.update(case=label, side=side, command="cellvit-trt " + " ".join(full))
            results.append(m)
            print(
                f"{label:<48} {side:<14} rc {m['rc']}  peak {m['peak_tree_gb']:5.2f} GB (process "
                f"{m['peak_self_gb']:5.2f})  wall {m['wall_s']:6.1f} s  cpu {m['cpu_s']:6.1f} s  "
                f"load {m['load_1min']}",
                flush=True,
            )
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))
    return 0


def demo_ckpt() -> Path:
    from cellvit_trt.data import demo_checkpoint_path

    return Path(demo_checkpoint_path())


if __name__ == "__main__":
    raise SystemExit(main())
