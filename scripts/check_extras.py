#!/usr/bin/env python3
"""Install each extra alone, from a freshly built wheel, into a fresh venv, and run what that extra is for.

    .venv/bin/python scripts/check_extras.py [--work DIR] [--parallel 2] [JOB ...]

What a user meets after `pip install 'cellvit-trt[EXTRA]'` is not what the test venv (every extra at once)
shows: an import that only another extra brings in passes there and fails here. So for every job below:
build the wheel once (`pip wheel --no-deps`), make a venv with no packages, install `wheel[extras]` into it
with pip (dependencies resolved as a user's pip would), then run `tests/install/smoke/<job>.py` with that
venv's Python in an empty folder. The smoke script drives the installed `cellvit-trt` like a user.

Shared inputs are made once with the project's own venv while the job venvs install: the demo model exported
to a 256² FP32 graph, a small synthetic pyramidal TIFF, and the real slide and tiles from shared/ (absent
ones are skipped by the smoke scripts, which say so). Writes DIR/results.json and exits 1 when any job failed.

A new extra is one line in JOBS plus its smoke script; tests/install/test_declared_imports.py fails while a
declared extra has neither a job nor a reason in NOT_RUN.
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "tests" / "install" / "smoke"

# job name -> extras installed (comma-separated, "" = core only). The smoke script is smoke/<job>.py.
JOBS: dict[str, str] = {
    "core": "",
    "ort": "ort",
    "export": "export",
    "slides": "slides",
    "ort_slides": "ort,slides",  # the README's install line
    "ort_addons": "ort,bench,parquet,serve",  # add-ons that only show beside a backend
}
# declared extras no job installs, and why
NOT_RUN: dict[str, str] = {
    "trt": "TensorRT needs an NVIDIA GPU and multi-GB wheels; benchmarks/gpu_check.sh runs it on a GPU",
    "dev": "the test environment itself (scripts/setup_env.sh installs it for every test run)",
    "ray": "the test environment installs it (scripts/setup_env.sh); tests/scale run `run --ray` on a real Ray",
}
# extra -> requirement added beside it: the CPU PyTorch that lies on this project's machines
PINS = {"export": os.environ.get("TORCH_SPEC", "torch==2.13.0")}
SHARED_REAL = ROOT.parent / "shared" / "data" / "real"
JOB_TIMEOUT_S = 1800  # per command, on a loaded 2-core machine; a job normally takes 20-70 s


def run(
    cmd: list[str], log, cwd: Path | None = None, env: dict | None = None, timeout: float = JOB_TIMEOUT_S
):
    log.write(f"$ {' '.join(map(str, cmd))}\n")
    log.flush()
    return subprocess.run(
        [str(c) for c in cmd], stdout=log, stderr=subprocess.STDOUT, cwd=cwd, env=env, timeout=timeout
    ).returncode


def pip(python: Path | str, *args: str) -> list[str]:
    """This venv's pip installing into `python`'s environment (the job venvs have no pip of their own)."""
    return [sys.executable, "-m", "pip", "--python", str(python), "--disable-pip-version-check", *args]


def build_wheel(work: Path) -> Path:
    dist = work / "dist"
    with open(work / "wheel.log", "w") as log:
        rc = run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "--no-build-isolation",
                "-q",
                "-w",
                dist,
                ROOT,
            ],
            log,
        )
    wheels = sorted(dist.glob("cellvit_trt-*.whl"))
    if rc or not wheels:
        raise SystemExit(f"check_extras: building the wheel failed (see {work / 'wheel.log'})")
    return wheels[-1]


def make_inputs(work: Path) -> dict[str, str]:
    """The demo graph, a synthetic pyramidal TIFF, and the real data's paths (made with this venv)."""
    inputs = work / "inputs"
    inputs.mkdir(exist_ok=True)
    cli = [sys.executable, "-m", "cellvit_trt.cli"]
    graph, slide = inputs / "demo.t256.onnx", inputs / "synthetic.tif"
    with open(work / "inputs.log", "w") as log:
        from cellvit_trt.data import demo_checkpoint_path

        rc = run(
            [
                *cli,
                "export",
                demo_checkpoint_path(),
                "--precision",
                "fp32",
                "--tile-size",
                "256",
                "--no-gate",
                "-o",
                graph,
            ],
            log,
        )
        rc |= run(
            [
                *cli,
                "synth",
                "slide",
                "--out",
                slide,
                "--width",
                "900",
                "--height",
                "700",
                "--tile-size",
                "256",
                "--no-labels",
            ],
            log,
        )
    if rc:
        raise SystemExit(f"check_extras: preparing the inputs failed (see {work / 'inputs.log'})")
    real_tiles = sorted((SHARED_REAL / "nucls15" / "images").glob("*.png"))
    return {
        "SMOKE_GRAPH": str(graph),
        "SMOKE_CHECKPOINT": str(demo_checkpoint_path()),
        "SMOKE_SYNTHETIC_SLIDE": str(slide),
        "SMOKE_REAL_SLIDE": str(SHARED_REAL / "CMU-1-Small-Region.svs"),
        "SMOKE_REAL_TILE": str(real_tiles[0]) if real_tiles else "",
    }


def install(job: str, wheel: Path, work: Path) -> tuple[Path, bool]:
    venv = work / "venvs" / job
    shutil.rmtree(venv, ignore_errors=True)
    extras = JOBS[job]
    req = f"{wheel}[{extras}]" if extras else str(wheel)
    pins = [PINS[e] for e in extras.split(",") if e in PINS]
    with open(work / f"{job}.log", "w") as log:
        ok = run([sys.executable, "-m", "venv", "--without-pip", venv], log) == 0
        # --no-compile: byte-compiling torch's tree costs more than the whole job otherwise
        ok = ok and run(pip(venv / "bin" / "python", "install", "-q", "--no-compile", req, *pins), log) == 0
    return venv, ok


def smoke(job: str, venv: Path, inputs: dict[str, str], work: Path) -> bool:
    cwd = work / "runs" / job
    shutil.rmtree(cwd, ignore_errors=True)
    cwd.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "NUMBA_"))}
    env.update(inputs, PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", PYTHONNOUSERSITE="1")
    with open(work / f"{job}.log", "a") as log:
        return run([venv / "bin" / "python", SMOKE / f"{job}.py"], log, cwd=cwd, env=env) == 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("jobs", nargs="*", help=f"jobs to run (default all: {', '.join(JOBS)})")
    ap.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary folder)")
    ap.add_argument("--parallel", type=int, default=2, help="jobs at once (default 2)")
    ap.add_argument("--keep", action="store_true", help="keep the venvs (default: removed after each job)")
    args = ap.parse_args(argv)
    unknown = [j for j in args.jobs if j not in JOBS]
    if unknown:
        ap.error(f"unknown jobs {unknown}; expected some of {', '.join(JOBS)}")
    jobs = args.jobs or list(JOBS)
    work = args.work or Path(tempfile.mkdtemp(prefix="cellvit-extras-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    wheel = build_wheel(work)
    results: dict[str, dict] = {}

    with ThreadPoolExecutor(max(1, args.parallel)) as pool, ThreadPoolExecutor(1) as prep:
        inputs_future = prep.submit(make_inputs, work)  # beside the first installs

        def one(job: str) -> None:
            t = time.perf_counter()
            venv, ok = install(job, wheel, work)
            t_install = time.perf_counter() - t
            ok = ok and smoke(job, venv, inputs_future.result(), work)
            if not args.keep:
                shutil.rmtree(venv, ignore_errors=True)
            results[job] = {
                "ok": ok,
                "extras": JOBS[job],
                "install_s": round(t_install, 1),
                "total_s": round(time.perf_counter() - t, 1),
                "log": str(work / f"{job}.log"),
            }
            print(
                f"[extras] {job} ({JOBS[job] or 'core only'}): {'ok' if ok else 'FAILED'} "
                f"in {results[job]['total_s']} s (install {results[job]['install_s']} s)",
                flush=True,
            )

        list(pool.map(one, jobs))
    summary = {"wheel": wheel.name, "wall_s": round(time.perf_counter() - t0, 1), "jobs": results}
    (work / "results.json").write_text(json.dumps(summary, indent=2))
    failed = [j for j in jobs if not results[j]["ok"]]
    for j in failed:
        print(f"[extras] --- {j}: last lines of {results[j]['log']}")
        print("".join(open(results[j]["log"]).readlines()[-25:]))
    print(
        f"[extras] wheel {wheel.name}: {len(jobs) - len(failed)} passed, {len(failed)} failed "
        f"in {summary['wall_s']} s; results in {work / 'results.json'}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
