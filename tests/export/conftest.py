"""Session-scoped artefacts for the export tests: one tiny checkpoint, its graphs in FP32/FP16/INT8 (each
exported once, gate included), a calibration folder of synthetic H&E tiles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

TILE = 256


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="session")
def tiny():
    """(model, info, checkpoint path): the shipped demo checkpoint (tiny variant trained on synthetic H&E), so
    the gate's cell-level metrics compare real cells."""
    from cellvit_trt.data import demo_checkpoint_path
    from cellvit_trt.models import load_checkpoint

    path = demo_checkpoint_path()
    model, info = load_checkpoint(path)
    return model, info, path


@pytest.fixture(scope="session")
def calib_dir(workdir) -> Path:
    """6 synthetic H&E tiles as PNG files (fewer than the recommended 500: the export warns)."""
    import cv2

    from cellvit_trt.export.samples import gate_tiles

    folder = workdir / "calib"
    folder.mkdir()
    for i, tile in enumerate(gate_tiles(6, TILE, seed=11)):
        cv2.imwrite(str(folder / f"tile{i}.png"), cv2.cvtColor(tile, cv2.COLOR_RGB2BGR))
    return folder


@pytest.fixture(scope="session")
def exported(tiny, workdir, calib_dir):
    """precision -> (ExportResult, warnings logged) for the tiny checkpoint at 256 px."""
    import logging

    from cellvit_trt.export import ExportSettings, export

    class Catch(logging.Handler):
        def __init__(self):
            super().__init__(logging.WARNING)
            self.messages: list[str] = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    out = {}
    for precision in ("fp32", "fp16", "int8"):
        catch = Catch()
        logging.getLogger("cellvit_trt").addHandler(catch)
        try:
            s = ExportSettings(
                checkpoint=tiny[2],
                output=workdir / f"tiny.{precision}.onnx",
                precision=precision,
                tile_size=TILE,
                # fp32/fp16: the gate's sample sized from the thresholds (export/samples.py). int8: the demo
                # model on 6 calibration tiles fails an honest INT8 gate (docs/export.md); the recipe tests
                # below need the graph, tests/core/test_gate_intervals.py tests that gate.
                gate=precision != "int8",
                calibration=calib_dir if precision == "int8" else None,
                calibration_tiles=6,
                calibration_batch=2,
            )
            out[precision] = (export(s), catch.messages)
        finally:
            logging.getLogger("cellvit_trt").removeHandler(catch)
    return out


def ort_run(path: Path, images: np.ndarray) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, {"image": images}), strict=True))
