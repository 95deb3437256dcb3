"""Real TensorRT builds of the tiny model's FP32, FP16 and INT8 graphs, checked against ONNX Runtime through
the export stage's parity gate. Skipped where there is no CUDA GPU or no TensorRT (the `tensorrt` marker).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from cellvit_trt.engine import BuildSettings, EngineBuildError, ensure_engine, load_engine_bytes
from cellvit_trt.engine.sidecar import layers_path

pytestmark = pytest.mark.tensorrt

TILE = 256
PRECISIONS = ("fp32", "fp16", "int8")


def _tiles(n: int, seed0: int) -> np.ndarray:
    from cellvit_trt.synthetic.tile import generate_tile

    return np.stack([generate_tile(TILE, seed=seed0 + i).image for i in range(n)])


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """The tiny model exported per precision with `cellvit_trt.export` (INT8 calibrated on synthetic H&E)."""
    import cv2
    import torch

    from cellvit_trt.export import ExportSettings, export
    from cellvit_trt.models import build_model
    from cellvit_trt.models.info import make_info

    root = tmp_path_factory.mktemp("engine-gpu")
    calib = root / "calib"
    calib.mkdir()
    for i, tile in enumerate(_tiles(8, 100)):
        cv2.imwrite(str(calib / f"t{i}.png"), cv2.cvtColor(tile, cv2.COLOR_RGB2BGR))
    torch.manual_seed(0)
    model = build_model("tiny").eval()
    info = make_info(model.spec)
    out = {}
    for precision in PRECISIONS:
        settings = ExportSettings(
            output=root / f"tiny.{precision}.onnx",
            precision=precision,
            tile_size=TILE,
            gate=False,
            calibration=calib if precision == "int8" else None,
            calibration_tiles=8,
        )
        out[precision] = export(settings, model, info).path
    return out


@pytest.mark.parametrize("precision", PRECISIONS)
def test_engine_passes_the_parity_gate_against_onnxruntime(precision, graphs, tmp_path):
    from cellvit_trt.export import run_gate
    from cellvit_trt.runtime.backends.onnxrt import OnnxRuntimeBackend
    from cellvit_trt.runtime.backends.trt import TensorRTBackend

    settings = BuildSettings(
        max_batch=2, output=tmp_path / f"tiny.{precision}.engine", timing_cache_dir=tmp_path / "tc"
    )
    art = ensure_engine(graphs[precision], settings)
    assert art.built
    side = art.sidecar
    io = {t["name"]: t for t in side["io"]}
    assert io["image"]["mode"] == "input" and io["image"]["dtype"] == "uint8"
    assert io["image"]["profile"] == [[1, TILE, TILE, 3], [2, TILE, TILE, 3], [2, TILE, TILE, 3]]
    assert {"fg", "hv", "type_map", "tissue_logits"} <= set(io) and io["fg"]["dtype"] == "uint8"
    assert side["metadata"]["precision"] == precision and side["build"]["tile_size"] == TILE
    assert "Layers" in json.loads(layers_path(art.path).read_text())
    print(
        f"{precision}: attention {side['build']['attention']['verdict']}, "
        f"built in {side['build']['seconds']} s"
    )

    with OnnxRuntimeBackend(graphs[precision]) as ref, TensorRTBackend(art.path) as cand:
        report = run_gate(ref, cand, _tiles(4, 0), precision, batch=2)
    report.raise_if_failed(f"TensorRT {precision} engine vs ONNX Runtime")

    again = ensure_engine(graphs[precision], settings)
    assert not again.built and again.reason == "cache hit"
    assert load_engine_bytes(art.path, art.key) == art.path.read_bytes()


def test_tampered_engine_is_rebuilt_for_real(graphs, tmp_path):
    settings = BuildSettings(
        max_batch=1, output=tmp_path / "t.engine", optimization_level=0, timing_cache=False
    )
    art = ensure_engine(graphs["fp32"], settings)
    data = bytearray(art.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    art.path.write_bytes(bytes(data))
    again = ensure_engine(graphs["fp32"], settings)
    assert again.built and "tampered" in again.reason


def test_unsupported_node_is_reported_by_name(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    node = helper.make_node("NoSuchOp", ["image"], ["y"], name="/decoder/custom", domain="example.custom")
    model = helper.make_model(
        helper.make_graph([node], "g", [x], [y]),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("example.custom", 1)],
    )
    path = tmp_path / "bad.onnx"
    onnx.save(model, str(path))
    with pytest.raises(EngineBuildError, match="(?s)could not parse ONNX graph.*/decoder/custom.*NoSuchOp"):
        ensure_engine(path, BuildSettings(max_batch=1, timing_cache=False))
