"""The tiny model exported in FP32, FP16 and INT8: contract I/O, recipe structure, gate, files on disk."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from tests.export.conftest import TILE, ort_run

from cellvit_trt.export.samples import gate_tiles

PRECISIONS = ("fp32", "fp16", "int8")
F32, F16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16


def _types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    t = {
        v.name: v.type.tensor_type.elem_type
        for v in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)
    }
    t.update({i.name: i.data_type for i in model.graph.initializer})
    return t


@pytest.mark.parametrize("precision", PRECISIONS)
def test_graph_io_follows_the_contract(exported, tiny, precision):
    result, _ = exported[precision]
    model = onnx.load(str(result.path))
    onnx.checker.check_model(model, full_check=True)
    inp = model.graph.input[0]
    dims = [d.dim_value or d.dim_param for d in inp.type.tensor_type.shape.dim]
    assert inp.name == "image" and inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert dims == ["N", TILE, TILE, 3]
    ops = {n.op_type for n in model.graph.node}
    assert not ops & {"Resize", "Upsample", "If", "Loop"}, "pos-embed must be a frozen constant"
    assert "LayerNormalization" in ops
    opset = {i.domain: i.version for i in model.opset_import}[""]
    assert opset == (19 if precision == "int8" else 17)
    assert all(i.domain in ("", "ai.onnx") for i in model.opset_import)

    out = ort_run(result.path, gate_tiles(3, TILE, seed=3))  # batch 3: the batch dim is really dynamic
    assert out["fg"].dtype == np.uint8 and out["fg"].shape == (3, TILE, TILE)
    assert out["hv"].dtype == np.float16 and out["hv"].shape == (3, 2, TILE, TILE)
    info = tiny[1]
    assert out["type_map"].dtype == np.uint8 and out["type_map"].max() < info.num_nuclei_classes
    assert out["tissue_logits"].dtype == np.float32
    assert out["tissue_logits"].shape == (3, info.num_tissue_classes)
    assert set(np.unique(out["fg"])) <= {0, 1}


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_gate_ran_and_passed_with_the_files_in_place(exported, precision):
    result, _ = exported[precision]
    report = result.gate
    assert report is not None and report.passed and report.precision == precision
    for key in ("fg_agreement", "type_agreement", "hv_max_abs", "hv_mean_abs", "tissue_max_abs", "bpq", "f1"):
        assert key in report.metrics
    # the demo model finds cells on the synthetic gate tiles: the cell-level part really ran
    assert report.cells["n_reference"] > 10 and not report.not_applicable
    assert 0.0 < report.metrics["bpq"] <= 1.0 and 0.0 < report.metrics["f1"] <= 1.0
    sidecar = result.path.with_name(result.path.name.replace(".onnx", ".export.json"))
    saved = json.loads(sidecar.read_text())
    assert saved["gate"]["passed"] and saved["metadata"]["precision"] == precision
    leftovers = [
        p.name for p in result.path.parent.iterdir() if p.name.startswith(".") or ".failed." in p.name
    ]
    assert leftovers == []


def test_fp16_recipe_keeps_norms_and_decisions_in_fp32(exported):
    model = onnx.load(str(exported["fp16"][0].path))
    types = _types(model)
    for node in model.graph.node:
        if node.op_type == "LayerNormalization":
            assert all(types[i] == F32 for i in node.input if i), node.name
        if node.op_type in ("Softmax", "ArgMax") and node.name.startswith("/decide"):
            assert types[node.input[0]] == F32, node.name
        if node.op_type in ("Conv", "ConvTranspose", "MatMul", "Gemm"):
            assert types[node.input[0]] == F16 and types[node.input[1]] == F16, node.name
    # the attention softmax stays FP16 (TensorRT MHA fusion), its scale now sits on Q before the first matmul
    attn = [n for n in model.graph.node if n.op_type == "Softmax" and "/attn/" in n.name]
    assert attn and all(types[n.input[0]] == F16 for n in attn)
    producer = {o: n for n in model.graph.node for o in n.output}
    for sm in attn:
        mm = producer[sm.input[0]]
        assert mm.op_type == "MatMul" and producer[mm.input[0]].op_type == "Mul"
    casts = [n for n in model.graph.node if n.op_type == "Cast"]
    assert len(casts) >= 2 * sum(n.op_type == "LayerNormalization" for n in model.graph.node)


def test_int8_recipe_places_symmetric_qdq_on_weight_layers_only(exported):
    result, warnings = exported["int8"]
    assert any("recommended" in w for w in warnings), warnings  # 4 calibration tiles < 500
    model = onnx.load(str(result.path))
    inits = {t.name: t for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    q = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert q
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zp = onnx.numpy_helper.to_array(inits[node.input[2]])
            assert zp.dtype == np.int8 and not zp.any(), node.name
            assert inits[node.input[1]].data_type == F16 if node.input[1] in inits else True
    quantised = [
        n
        for n in model.graph.node
        if n.op_type in ("Conv", "ConvTranspose", "MatMul", "Gemm")
        and n.input[0] in producer
        and producer[n.input[0]].op_type == "DequantizeLinear"
    ]
    assert len(quantised) >= 0.8 * result.summary["int8"]["quantized_nodes"]
    for node in model.graph.node:
        if node.op_type in ("Softmax", "LayerNormalization"):
            assert (
                producer.get(node.input[0]) is None or producer[node.input[0]].op_type != "DequantizeLinear"
            )
        if node.op_type == "MatMul" and not any(i in inits for i in node.input):
            feeds = [producer.get(i) for i in node.input]
            if all(f is not None and f.op_type != "DequantizeLinear" for f in feeds):
                continue
            # an attention matmul may only see DQ on the weight path, never on both activations
            assert not all(
                f is not None and f.op_type == "DequantizeLinear" and f.input[0] not in inits for f in feeds
            ), node.name
    assert result.summary["int8"]["excluded"]["attention_matmul"] == 2 * 4  # 4 blocks: q·kᵀ and attn·v
    assert result.summary["int8"]["excluded"]["output_layer"] >= 4  # three heads + tissue head
    assert result.summary["int8"]["excluded"]["full_res_skip"] == 2  # decoder0's two convs on the image


def test_sam_encoder_exports_with_layernorm2d_as_one_node(tmp_path):
    """A small SAM-kind model (windowed + global attention, rel-pos, neck with LayerNorm2d) in FP16: the
    hand-written LayerNorm2d becomes LayerNormalization (kept FP32), and the graph passes its gate."""
    import torch

    from cellvit_trt.export import ExportSettings, export
    from cellvit_trt.models import DecoderDims, EncoderSpec, build_model, custom_spec, make_info

    enc = EncoderSpec(
        "sam", 64, 4, 2, (1, 2, 3, 4), img_size=256, global_attn_indexes=(1, 3), window_size=6, out_chans=32
    )
    spec = custom_spec(
        "tinysam",
        enc,
        DecoderDims(skip_dim_11=32, skip_dim_12=16, bottleneck_dim=32, stage_dims=(16, 32, 64), stem_dim=8),
    )
    torch.manual_seed(0)
    model = build_model(spec).eval()
    result = export(
        ExportSettings(
            output=tmp_path / "sam.onnx", precision="fp16", tile_size=TILE, gate_tiles=1, gate_batch=1
        ),
        model,
        make_info(spec),
    )
    assert result.gate.passed
    model_proto = onnx.load(str(result.path))
    ops = [n.op_type for n in model_proto.graph.node]
    assert "Sqrt" not in ops and "Pow" not in ops  # no decomposed norm left
    assert ops.count("LayerNormalization") == 2 * 4 + 2  # norm1/norm2 per block + the neck's two
    types = _types(model_proto)
    for node in model_proto.graph.node:
        if node.op_type == "LayerNormalization":
            assert types[node.input[0]] == F32
    # the SAM model's own weights are unchanged after export (patches are undone)
    assert type(model.encoder.neck[1]).__name__ == "LayerNorm2d"
