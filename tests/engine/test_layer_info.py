"""The attention-fusion check on engine-inspector JSON (the layouts TensorRT 10 and 11 write)."""

from __future__ import annotations

import json

from cellvit_trt.engine.layer_info import check_attention, layers_of


def _layer(name, kind, inputs, outputs, tactic=""):
    return {
        "Name": name,
        "LayerType": kind,
        "Inputs": [{"Name": i} for i in inputs],
        "Outputs": [{"Name": o} for o in outputs],
        "TacticName": tactic,
    }


UNFUSED = {
    "Layers": [
        _layer("/blocks.0/attn/qkv/MatMul", "MatrixMultiply", ["x"], ["qkv"]),
        _layer("/blocks.0/attn/MatMul", "MatrixMultiply", ["qkv"], ["s"]),
        _layer("/blocks.0/attn/Mul", "ElementWise", ["s"], ["s2"]),
        _layer("/blocks.0/attn/Softmax", "SoftMax", ["s2"], ["p"]),
        _layer("Reformatting CopyNode for p", "Reformat", ["p"], ["p2"]),
        _layer("/blocks.0/attn/MatMul_1", "MatrixMultiply", ["p2", "qkv"], ["o"]),
        _layer("/head/Softmax", "SoftMax", ["o"], ["y"]),  # a classifier softmax: not attention
    ]
}


def test_unfused_pattern_is_found_and_head_softmax_ignored():
    report = check_attention(UNFUSED, expected_blocks=1)
    assert report.verdict == "unfused"
    assert report.unfused_softmax == ("/blocks.0/attn/Softmax",)
    assert "attention did not fuse" in report.warning and "/blocks.0/attn/Softmax" in report.warning


def test_fused_kernels_are_recognised_in_10x_and_11x_layouts():
    layers = [
        _layer("/blocks.0/attn/qkv/MatMul", "CaskGemmMatrixMultiply", ["x"], ["qkv"]),
        _layer("_gemm_mha_v2_myl0_12", "kgen", ["qkv"], ["o"], "sm90_xmma_fmha"),
        _layer("/head/Softmax", "SoftMax", ["o"], ["y"]),
    ]
    for info in ({"Layers": layers, "Bindings": ["x", "y"]}, layers, json.dumps({"Layers": layers})):
        report = check_attention(info, expected_blocks=1)
        assert report.verdict == "fused" and report.warning is None
        assert report.fused_layers == ("_gemm_mha_v2_myl0_12",)


def test_unconfirmed_when_attention_is_hidden_in_a_foreign_node():
    info = {
        "Layers": [
            _layer(
                "{ForeignNode[/blocks.0/attn/qkv/MatMul.../blocks.0/mlp/fc2/MatMul]}", "Myelin", ["x"], ["y"]
            )
        ]
    }
    report = check_attention(info, expected_blocks=12)
    assert report.verdict == "unconfirmed" and "12 attention block(s)" in report.warning


def test_no_attention_and_unknown():
    assert check_attention({"Layers": [_layer("conv", "CaskConvolution", ["x"], ["y"])]}, 0).verdict == "none"
    # Without DETAILED verbosity the inspector lists only layer names: nothing can be said.
    names_only = {"Layers": ["conv", "softmax"], "Bindings": []}
    assert layers_of(names_only) == ["conv", "softmax"]
    assert check_attention(names_only, 2).verdict == "unknown"
