"""INT8 calibration streams: ONNX Runtime's calibrator runs its augmented graph under the runtime's bounded
session options (export/int8.py::bounded_calibration_session), which changes its memory, not its ranges.

Before: the calibration session held every calibrated activation of a tile until the graph's end (default
execution order) and, from the second tile on, a second copy for the memory pattern: ~6x one inference's
activations, measured here as the extra peak over the loaded process.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import weakref
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from tests.export.conftest import TILE

ROOT = Path(__file__).resolve().parents[2]

CHILD = r"""
import contextlib, sys
from pathlib import Path
import cellvit_trt.export.int8 as int8
from cellvit_trt.export.calibration import plan_calibration
from cellvit_trt.runtime.backends.onnxrt import OnnxRuntimeBackend
from cellvit_trt.runtime.memory import current_rss_bytes, reset_peak_rss, peak_rss_bytes as peak
import onnxruntime.quantization  # imported before measuring: its import is not calibration memory

graph, calib, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[4])
n, tile_size, bounded, method = int(sys.argv[3]), int(sys.argv[6]), sys.argv[5], sys.argv[7]
plan = plan_calibration(calib, n, tile_size)
tile = plan.read(0, 1)
with OnnxRuntimeBackend(graph, batch=1) as be:
    rss = current_rss_bytes(); reset_peak_rss()
    be.infer(tile)
    infer = peak() - rss
if bounded == "no":  # ORT's own calibration session (what quantize_int8 did before)
    int8.bounded_calibration_session = contextlib.nullcontext
rss = current_rss_bytes(); reset_peak_rss()
int8.quantize_int8(graph, out, plan, 1, method, 99.999, False)
print("EXTRA", infer, peak() - rss)
"""


def calibrate_in_child(
    graph: Path, calib: Path, n: int, out: Path, bounded: bool = True, method: str = "minmax"
) -> tuple[int, int]:
    """(extra peak of one batch-1 inference, extra peak of calibrating on n tiles) in a fresh process."""
    env = {**os.environ, "CELLVIT_TRT_ORT_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(graph), str(calib), str(n), str(out), "yes" if bounded else "no"]
        + [str(TILE), method],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    infer, calibration = proc.stdout.split("EXTRA")[1].split()
    return int(infer), int(calibration)


def test_calibration_memory_stays_at_one_tile_and_does_not_grow_with_tiles(exported, workdir, calib_dir):
    fp32 = exported["fp32"][0].path
    infer2, cal2 = calibrate_in_child(fp32, calib_dir, 2, workdir / "cal2.onnx")
    infer6, cal6 = calibrate_in_child(fp32, calib_dir, 6, workdir / "cal6.onnx")
    mb = 2**20
    print(
        f"extra peak over the loaded process: inference of 1 tile {infer2 / mb:.0f} MiB; calibration on 2 "
        f"tiles {cal2 / mb:.0f} MiB, on 6 tiles {cal6 / mb:.0f} MiB"
    )
    # the calibration graph at batch 1 needs no more than an inference of the same tile (it reuses its arena)
    assert cal2 <= max(infer2, infer6) and cal6 <= max(infer2, infer6), (infer2, cal2, infer6, cal6)
    # and streams: three times the tiles, no more memory (ranges are merged batch by batch)
    assert cal6 <= cal2 + 0.25 * infer2, (cal2, cal6)


def test_histogram_calibration_streams_too(exported, workdir, calib_dir):
    """Percentile and entropy pull every calibrated activation of a batch into Python (ORT's histograms):
    ~120 MiB per 256 px tile here. Collected batch by batch (`CalibStridedMinMax`), three times the tiles
    cost no more; collected in one go (ORT's default) they cost 226 MiB on 2 tiles, 720 MiB on 6."""
    fp32 = exported["fp32"][0].path
    _, cal2 = calibrate_in_child(fp32, calib_dir, 2, workdir / "pct2.onnx", method="percentile")
    _, cal6 = calibrate_in_child(fp32, calib_dir, 6, workdir / "pct6.onnx", method="percentile")
    mb = 2**20
    print(f"percentile calibration, extra peak: 2 tiles {cal2 / mb:.0f} MiB, 6 tiles {cal6 / mb:.0f} MiB")
    # four more tiles add less than a quarter of what two took (holding them all would add ~2x)
    assert cal6 <= 1.25 * cal2, (cal2, cal6)


class _CountingPlan:
    """A CalibrationPlan that counts the tiles it has handed out and that are still alive."""

    def __init__(self, plan):
        self.plan, self.live, self.most_alive, self.tiles_read = plan, 0, 0, 0

    def __len__(self) -> int:
        return len(self.plan)

    def read(self, start: int, stop: int) -> np.ndarray:
        out = self.plan.read(start, stop)
        self.live += len(out)
        self.tiles_read += len(out)
        self.most_alive = max(self.most_alive, self.live)
        weakref.finalize(out, self._freed, len(out))
        return out

    def _freed(self, n: int) -> None:
        self.live -= n


def test_calibration_holds_one_batch_of_tiles_at_a_time(exported, workdir, calib_dir):
    """The reader reads each batch when ORT asks for it and nothing keeps it afterwards: at most the batch
    in use and the one before it are alive, however many tiles are calibrated (a reader that read the plan
    up front, or a calibrator that kept its inputs, holds all 6)."""
    from cellvit_trt.export import int8
    from cellvit_trt.export.calibration import plan_calibration

    plan = _CountingPlan(plan_calibration(calib_dir, 6, TILE))
    int8.quantize_int8(exported["fp32"][0].path, workdir / "counted.onnx", plan, 1, "minmax", 99.999, False)
    assert plan.tiles_read == 6 and plan.live == 0, (plan.tiles_read, plan.live)
    assert plan.most_alive <= 2, plan.most_alive


def _initializers(path: Path) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def test_bounded_calibration_gives_ort_s_own_ranges(exported, workdir, calib_dir):
    """Same Q/DQ scales, bit for bit, with ORT's default calibration session and with the bounded one."""
    from cellvit_trt.export import int8
    from cellvit_trt.export.calibration import plan_calibration

    fp32 = exported["fp32"][0].path
    plan = plan_calibration(calib_dir, 3, TILE)
    int8.quantize_int8(fp32, workdir / "bounded.onnx", plan, 1, "minmax", 99.999, False)
    original = int8.bounded_calibration_session
    int8.bounded_calibration_session = contextlib.nullcontext
    try:
        int8.quantize_int8(fp32, workdir / "ort_default.onnx", plan, 1, "minmax", 99.999, False)
    finally:
        int8.bounded_calibration_session = original
    a, b = _initializers(workdir / "bounded.onnx"), _initializers(workdir / "ort_default.onnx")
    scales = [k for k in a if k.endswith("_scale")]
    assert len(scales) > 20 and a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
