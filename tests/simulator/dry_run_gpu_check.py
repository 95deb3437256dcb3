"""Run benchmarks/gpu_check.py's TensorRT part on the simulator: checks the script's own logic (exports,
engine builds, the gate, every graphs/zero-copy combination, the figures it prints) before GPU time is spent.

    PYTHONPATH=.:src python -m tests.simulator.dry_run_gpu_check      # a few minutes on 2 CPU cores

The simulated engines run their ONNX graph with ONNX Runtime on the CPU, so every gate passes by construction
and the figures (simulated clock) mean nothing: this is a test of the script, not a measurement.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from tests.simulator.harness import SimGPU

ROOT = Path(__file__).resolve().parents[2]


def main() -> int:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_check

    import cellvit_trt.engine.cuda_probe as probe
    import cellvit_trt.engine.trt_api as trt_api

    with tempfile.TemporaryDirectory() as tmp, SimGPU("lazy", Path(tmp)) as gpu:
        probe.import_cudart = trt_api.import_cudart = lambda: gpu.cuda  # the builder's probe sees the sim
        gpu_check.BUDGET_S, gpu_check.T_START = 1000.0, time.perf_counter()
        gpu_check.SMOKE = True  # small tiles: ONNX Runtime on a CPU stands in for the engines
        gpu_check.tensorrt_engines(tmp)
    print(json.dumps(gpu_check.REPORT, indent=1, default=str))
    return 0 if all(p.get("ok", True) for p in gpu_check.REPORT["parts"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
