"""Issue 13's memory bounds, measured on real `cellvit-trt run` processes: the shipped demo model (0.96 M
parameters, exported to ONNX at 1024 px as `run` does on first use) on ONNX Runtime CPU, synthetic pyramidal
slides of 3x3 and 6x6 tiles.

- peak RSS does not grow with the slide: at `-b 8` the 6x6-tile slide peaks within 10 % of the 3x3 one (before
  the fix: 4.75 vs 8.8 GiB, ONNX Runtime's memory pattern and arena);
- the default settings (batch chosen from the memory budget: 1 tile on a CPU) stay under 2 GB, and so does
  the footprint probe that measured the model;
- a batch that cannot fit fails before the run with the budget in its message.

Each run is a fresh Python process that reports the peak of its own memory (VmHWM: getrusage's ru_maxrss would
carry over pytest's own peak through fork and exec).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TILE, STRIDE = 1024, 960  # the demo graph's tile and the upstream stride (64 px overlap)
GB = 10**9


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    pytest.importorskip("torch")
    from cellvit_trt.data import demo_checkpoint_path
    from cellvit_trt.runtime.backends import export_cached
    from cellvit_trt.synthetic import write_synthetic_slide

    d = tmp_path_factory.mktemp("memory")
    # the very graph `cellvit-trt run` exports into its cache on first use (its parity gate skipped here to
    # save a minute: the gate checks a graph, it does not change it)
    export_cached(Path(demo_checkpoint_path()), TILE, "fp32", cache_dir=d / "cache", gate=False)
    slides = {}
    for n in (2, 3, 6):
        slides[n] = d / f"slide{n}x{n}.tiff"
        write_synthetic_slide(
            slides[n],
            width=n * STRIDE,
            height=n * STRIDE,
            mpp=0.25,
            seed=0,
            downsamples=(1, 4),
            glass_fraction=0.05,
            write_labels=False,
        )
    return {"dir": d, "cache": d / "cache", "slides": slides}


def run_cli(args: list[str]) -> tuple[subprocess.CompletedProcess, int]:
    """(process, its own peak RSS in bytes) for `cellvit-trt <args>` in a fresh process."""
    code = (
        "import sys\nfrom cellvit_trt.cli import main\n"
        "from cellvit_trt.runtime.memory import peak_rss_bytes\n"
        "rc = main(sys.argv[1:])\nprint('PEAK_RSS', peak_rss_bytes(), flush=True)\nsys.exit(rc)"
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR", str(ROOT / ".numba_cache"))}
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=900, env=env, cwd=ROOT
    )
    peak = int(proc.stdout.split("PEAK_RSS")[-1].split()[0]) if "PEAK_RSS" in proc.stdout else 0
    return proc, peak


def run_slide(world, n: int, *extra: str):
    out = world["dir"] / f"out-{n}-{'-'.join(extra) or 'default'}"
    args = ["run", str(world["slides"][n]), "-o", str(out), "--cache-dir", str(world["cache"]), "-q", *extra]
    proc, peak = run_cli(args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / f"slide{n}x{n}" / "summary.json").read_text())
    return proc, peak, summary


def test_peak_memory_is_flat_in_slide_area_at_batch_8(world):
    peaks = {}
    for n in (3, 6):
        # summary only: the writers stream (their memory does not depend on the slide) and cost CI time
        proc, peak, summary = run_slide(world, n, "-b", "8", "--no-tissue", "--outputs", "summary")
        assert summary["tiles_processed"] == n * n and summary["memory"]["plan"]["batch"] == 8
        # summary.json reports the same process peak the test reads
        assert abs(summary["memory"]["peak_host_rss_mb"] * 2**20 - peak) < 0.02 * peak
        assert summary["memory"]["peak_device_mb"] is None  # no GPU backend: null, never a number
        peaks[n] = peak
    print(f"peak RSS at -b 8: 3x3 {peaks[3] / GB:.2f} GB, 6x6 {peaks[6] / GB:.2f} GB")
    # 9 tiles = one batch of 8 + 1; 36 tiles = four batches of 8 + 4 (a last partial batch of another size)
    assert peaks[6] <= 1.1 * peaks[3], peaks


def test_default_settings_fit_in_2_gb(world):
    proc, peak, summary = run_slide(world, 2)
    plan = summary["memory"]["plan"]
    assert plan["batch"] == 1 and "CPU backend" in plan["reason"], plan
    assert "batch 1:" in proc.stderr and "budget" in proc.stderr, proc.stderr[-2000:]
    # the footprint probe: a process of its own, run once per model (here by the first test of this file)
    probe = plan["footprint"]["probe_peak"]
    print(f"default run: peak RSS {peak / GB:.2f} GB; footprint probe {probe / GB:.2f} GB")
    assert peak < 2 * GB and probe < 2 * GB, (peak, probe)
    # the estimate the batch was chosen with is close to what the run took (it is a plan, not a guess)
    assert 0.7 * peak <= plan["host_estimate_mb"] * 2**20 <= 1.5 * peak, (plan["host_estimate_mb"], peak)


def test_a_batch_that_cannot_fit_fails_before_the_run(world):
    out = world["dir"] / "out-budget"
    args = ["run", str(world["slides"][3]), "-o", str(out), "--cache-dir", str(world["cache"]), "-q"]
    proc, _ = run_cli([*args, "-b", "8", "--max-memory", "1500M"])
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "batch 8 does not fit the memory budget" in proc.stderr and "--max-memory 1500M" in proc.stderr
    assert not (out / "slide3x3").exists()  # nothing was started
