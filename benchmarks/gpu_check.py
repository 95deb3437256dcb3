"""GPU check of the streaming layer: run on a CUDA machine by benchmarks/gpu_check.sh (after the
`pytest -m "gpu or tensorrt"` step), in what is left of its 5 minutes (GPU_CHECK_BUDGET_S).

    bash benchmarks/gpu_check.sh            # writes $OUT/gpu_check.json when OUT is set

Never run on a real GPU yet (no GPU has been available to this project): see benchmarks/RESULTS.md.

Parts (each guarded: a failing part is reported with its error and the next one runs):
1. environment: GPU, driver/runtime, torch, cuda-python, CuPy, Numba, TensorRT
2. where TensorRT is installed (else one line says it is skipped): the shipped demo model exported at 256²
   in FP32, FP16 and INT8 (calibrated on synthetic H&E), an engine built for each, and each engine run with
   and without CUDA graphs and with and without zero-copy (mapped pinned memory): the export parity gate
   against ONNX Runtime, tiles/s with 1 vs 2 batches in flight, copy/compute overlap and GPU busy fraction
   from the CUDA event timeline
3. torch-cuda, tiny model @256 and CellViT-256 @1024 (random weights), FP16 autocast, in the same streaming
   layer: the same figures
4. the pipeline (reader → backend → Numba post-processing pool → sink) on the tiny model: tiles/s end to end
   and the fraction of time the backend waited for input
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
BUDGET_S = float(os.environ.get("GPU_CHECK_BUDGET_S", "270"))
# GPU_CHECK_CPU_SMOKE=1: run the script's logic with the CPU PyTorch backend and tiny sizes (no GPU needed);
# the numbers mean nothing, the point is that the script itself works before GPU time is spent on it.
SMOKE = os.environ.get("GPU_CHECK_CPU_SMOKE") == "1"
T_START = time.perf_counter()
REPORT: dict = {"parts": {}}


def left() -> float:
    return BUDGET_S - (time.perf_counter() - T_START)


def part(name):
    def wrap(fn):
        def run(*a, **kw):
            if left() < 10:
                REPORT["parts"][name] = {"skipped": f"time budget spent ({BUDGET_S:.0f} s)"}
                print(f"[{name}] skipped: time budget spent", flush=True)
                return None
            t0 = time.perf_counter()
            print(f"[{name}] ...", flush=True)
            try:
                res = fn(*a, **kw)
                REPORT["parts"][name] = {
                    "ok": True,
                    "seconds": round(time.perf_counter() - t0, 2),
                    **(res or {}),
                }
                print(f"[{name}] {json.dumps(REPORT['parts'][name], default=str)}", flush=True)
                return res
            except BaseException as exc:  # report and go on: one broken part must not hide the others
                if isinstance(exc, KeyboardInterrupt):
                    raise
                REPORT["parts"][name] = {
                    "ok": False,
                    "error": f"{type(exc).__name__}: {exc}",
                    "trace": traceback.format_exc(limit=6),
                }
                print(f"[{name}] FAILED: {type(exc).__name__}: {exc}", flush=True)
                return None

        return run

    return wrap


def union_length(intervals):
    total, end = 0.0, -float("inf")
    for s, e in sorted(intervals):
        if e <= end:
            continue
        total += e - max(s, end)
        end = e
    return total


def overlap_report(timeline):
    """Copy/compute overlap from per-batch CUDA event times (ms from a common origin)."""
    if not timeline:
        return {"timeline": "not recorded by this backend"}
    comp = [(t["compute_start"], t["compute_done"]) for t in timeline]
    copies = []
    for i, t in enumerate(timeline):
        others = [c for j, c in enumerate(comp) if j != i]
        for s, e in (("h2d_start", "h2d_done"), ("compute_done", "d2h_done")):
            if s in t and e in t:
                copies.append(((t[s], t[e]), others))
    copy_ms = sum(e - s for (s, e), _ in copies)
    hidden = 0.0
    for (s, e), others in copies:
        hidden += union_length([(max(s, a), min(e, b)) for a, b in others if min(e, b) > max(s, a)])
    span = max(t.get("d2h_done", t["compute_done"]) for t in timeline) - min(
        t.get("h2d_start", t["compute_start"]) for t in timeline
    )
    busy = union_length(comp)
    return {
        "copy_ms_total": round(copy_ms, 2),
        "copy_ms_overlapped_with_compute": round(hidden, 2),
        "copy_overlap_fraction": round(hidden / copy_ms, 3) if copy_ms else None,
        "gpu_busy_fraction": round(busy / span, 3) if span > 0 else None,
        "compute_ms_mean": round(busy / len(comp), 3),
    }


def drive(backend, batches, in_flight):
    """Submit with `in_flight` batches queued; returns wall seconds."""
    pending = []
    t0 = time.perf_counter()
    for b in batches:
        if len(pending) >= in_flight:
            backend.result(pending.pop(0))
        pending.append(backend.submit(b))
    for h in pending:
        backend.result(h)
    return time.perf_counter() - t0


def measure_streaming(backend, tile, batch, seconds=12.0):
    rng = np.random.default_rng(0)
    pool = [rng.integers(0, 256, (batch, tile, tile, 3), dtype=np.uint8) for _ in range(4)]
    drive(backend, pool[:2], 2)  # warm-up (cuDNN autotune, allocator)
    t0 = time.perf_counter()
    drive(backend, pool[:2], 1)
    per_batch = (time.perf_counter() - t0) / 2
    n = int(max(6, min(200, (seconds / 2) / max(per_batch, 1e-3))))
    batches = [pool[i % 4] for i in range(n)]
    serial = drive(backend, batches, 1)
    backend.timeline = []
    piped = drive(backend, batches, 2)
    timeline, backend.timeline = backend.timeline, None
    return {
        "tile": tile,
        "batch": batch,
        "batches": n,
        "tiles_per_s_1_in_flight": round(n * batch / serial, 2),
        "tiles_per_s_2_in_flight": round(n * batch / piped, 2),
        "speedup_from_overlap": round(serial / piped, 3),
        **overlap_report(timeline),
    }


def streaming_backend(variant, tmp, tile, batch):
    """The PyTorch CUDA backend in the cuda-python streaming layer (CPU PyTorch in smoke mode)."""
    if SMOKE:
        from cellvit_trt.runtime.backends.torch import TorchBackend

        return TorchBackend(checkpoint(variant, tmp), batch=batch, tile_size=tile)
    from cellvit_trt.runtime.backends.torch_cuda import TorchCudaBackend

    return TorchCudaBackend(checkpoint(variant, tmp), precision="fp16", batch=batch, tile_size=tile)


def checkpoint(variant, tmp):
    import torch

    from cellvit_trt.models import build_model, save_checkpoint

    torch.manual_seed(0)
    path = Path(tmp) / f"{variant}.pth"
    save_checkpoint(path, build_model(variant).eval())
    return path


@part("environment")
def environment():
    env = {"python": platform.python_version(), "platform": platform.platform()}
    for mod in ("torch", "cuda.bindings", "cupy", "numba", "tensorrt", "onnxruntime", "cv2"):
        try:
            m = __import__(mod, fromlist=["_"])
            env[mod] = getattr(m, "__version__", "present")
        except Exception as exc:  # report the absence, it decides what runs
            env[mod] = f"absent ({type(exc).__name__})"
    from cellvit_trt.errors import CellViTTRTError
    from cellvit_trt.runtime.cuda.device import probe_device

    try:
        env["gpu"] = probe_device(0).describe()
        env["gpu_ok"] = True
    except CellViTTRTError as exc:
        env["gpu"], env["gpu_ok"] = f"none: {exc}", False
    try:
        import torch

        env["torch_cuda"], env["torch_sees_gpu"] = torch.version.cuda, torch.cuda.is_available()
    except ImportError:
        pass
    return env


@part("torch_cuda_tiny_256")
def torch_tiny(tmp):
    tile, batch = (64, 2) if SMOKE else (256, 32)
    with streaming_backend("tiny", tmp, tile, batch) as be:
        return measure_streaming(be, tile, batch, seconds=2 if SMOKE else 12)


@part("torch_cuda_cellvit256_1024")
def torch_vit256(tmp):
    tile, batch = (64, 1) if SMOKE else (1024, 8)
    with streaming_backend("CellViT256", tmp, tile, batch) as be:
        return measure_streaming(be, tile, batch, seconds=2 if SMOKE else 25)


@part("pipeline_tiny_256_torch_cuda")
def pipeline(tmp):
    from cellvit_trt.kernels import PostProcessor
    from cellvit_trt.runtime.pipeline import Pipeline

    try:  # H&E-like tiles with nuclei, so post-processing does realistic work
        from cellvit_trt.synthetic.tile import generate_tile

        tiles = [generate_tile(256, seed=s, glass_fraction=0.0).image for s in range(8)]
    except Exception:
        rng = np.random.default_rng(1)
        tiles = [rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) for _ in range(8)]
    pp = PostProcessor()
    workers = os.cpu_count() or 4
    tile, batch, n = (64, 4, 32) if SMOKE else (256, 32, 2048)
    tiles = [t[:tile, :tile].copy() for t in tiles]
    with streaming_backend("tiny", tmp, tile, batch) as be:
        pp.process_tile(*[be.infer(np.stack(tiles[:1]))[k][0] for k in ("fg", "hv", "type_map")])  # JIT
        cells = [0]

        def sink(i, r):
            cells[0] += len(r.cells.area)

        stats = Pipeline(
            be,
            read=lambda i: tiles[i % 8],
            sink=sink,
            batch=batch,
            workers=workers,
            process=lambda i, m: pp.process_tile(m["fg"], m["hv"], m["type_map"]),
        ).run(range(n))
    return {"workers": workers, "cells": cells[0], **stats.to_dict()}


def synthetic_tiles(n, tile, seed0=0):
    from cellvit_trt.synthetic.tile import generate_tile

    return np.stack([generate_tile(tile, seed=seed0 + i).image for i in range(n)])


@part("tensorrt_demo_engines")
def tensorrt_engines(tmp):
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None:
        print(
            "TensorRT parts SKIPPED: the tensorrt module is not installed here (pip install tensorrt)",
            flush=True,
        )
        return {"skipped": "TensorRT is not installed"}
    import cv2

    from cellvit_trt.data import demo_checkpoint_path
    from cellvit_trt.engine import BuildSettings, ensure_engine
    from cellvit_trt.export import ExportSettings, export, run_gate
    from cellvit_trt.export.gate import collect
    from cellvit_trt.runtime.backends.onnxrt import OnnxRuntimeBackend
    from cellvit_trt.runtime.backends.trt import TensorRTBackend

    tile, batch = (128, 2) if SMOKE else (256, 8)  # INT8 calibration tiles need > 2 x 32 px overlap
    calib = Path(tmp) / "calib"
    calib.mkdir(exist_ok=True)
    for i, t in enumerate(synthetic_tiles(8, tile, seed0=100)):
        cv2.imwrite(str(calib / f"t{i}.png"), cv2.cvtColor(t, cv2.COLOR_RGB2BGR))
    gate_tiles = synthetic_tiles(4, tile)
    out = {}
    for precision in ("fp32", "fp16", "int8"):
        if left() < 45:
            out[precision] = "skipped: time budget"
            continue
        onnx = export(
            ExportSettings(
                checkpoint=demo_checkpoint_path(),
                output=Path(tmp) / f"demo.{precision}.onnx",
                precision=precision,
                tile_size=tile,
                gate=False,
                calibration=calib if precision == "int8" else None,
                calibration_tiles=8,
            )
        ).path
        art = ensure_engine(
            onnx,
            BuildSettings(
                max_batch=batch,
                output=Path(tmp) / f"demo.{precision}.engine",
                timing_cache_dir=Path(tmp) / "tc",
            ),
        )
        build = art.sidecar["build"]
        res = {"build_s": build["seconds"], "attention": build["attention"]["verdict"]}
        with OnnxRuntimeBackend(onnx) as ort:
            reference = collect(ort, gate_tiles, 2)
        for graphs in (False, True):
            for zero_copy in (False, True):
                with TensorRTBackend(art.path, cuda_graphs=graphs, zero_copy=zero_copy) as be:
                    gate = run_gate(None, be, gate_tiles, precision, batch=2, reference_outputs=reference)
                    figures = measure_streaming(be, tile, batch, seconds=2)
                    res[f"graphs={graphs} zero_copy={zero_copy}"] = {
                        "gate": "PASSED" if gate.passed else "FAILED",
                        "gate_failures": gate.failures,
                        "graphs_in_use": be.cuda_graphs,  # False: the capture failed and it ran eagerly
                        **figures,
                    }
        out[precision] = res
    return out


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        env = environment()
        if not env or not (env.get("gpu_ok") or SMOKE):
            print("no usable GPU: nothing else to check", flush=True)
        else:
            tensorrt_engines(tmp)
            torch_tiny(tmp)
            pipeline(tmp)
            torch_vit256(tmp)
    REPORT["seconds"] = round(time.perf_counter() - T_START, 1)
    text = json.dumps(REPORT, indent=2, default=str)
    out = os.environ.get("OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "gpu_check.json").write_text(text)
    print(text)
    return 0 if all(p.get("ok", True) for p in REPORT["parts"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
