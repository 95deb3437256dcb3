"""Fixtures of the engine tests: small ONNX graphs built with onnx.helper (no exporter, no torch)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


def cast_graph(
    path: Path, tile: int | str = 32, batch: int | str = "N", metadata: dict | None = None, opset: int = 17
) -> Path:
    """uint8 [N,H,W,3] → float32, the deployment graph's input convention in one node."""
    x = helper.make_tensor_value_info("image", TensorProto.UINT8, [batch, tile, tile, 3])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, [batch, tile, tile, 3])
    graph = helper.make_graph(
        [helper.make_node("Cast", ["image"], ["out"], to=TensorProto.FLOAT)], "g", [x], [y]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    if metadata is not None:
        helper.set_model_props(model, {"cellvit_trt": json.dumps(metadata)})
    onnx.save(model, str(path))
    return path


def attention_graph(path: Path, blocks: int = 2, seq: int = 16, dim: int = 8, external: bool = False) -> Path:
    """`blocks` self-attention cores, (q*scale) @ kᵀ → Softmax → @ v, chained; weights optionally external."""
    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", seq, dim])
    nodes, inits, cur = [], [], "x"
    for b in range(blocks):
        w = numpy_helper.from_array(rng.standard_normal((dim, dim)).astype(np.float32), f"w{b}")
        s = numpy_helper.from_array(np.array(dim**-0.5, np.float32), f"scale{b}")
        inits += [w, s]
        nodes += [
            helper.make_node("MatMul", [cur, f"w{b}"], [f"q{b}"], name=f"/blocks.{b}/attn/qkv/MatMul"),
            helper.make_node("Mul", [f"q{b}", f"scale{b}"], [f"qs{b}"], name=f"/blocks.{b}/attn/Mul"),
            helper.make_node("Transpose", [f"q{b}"], [f"kt{b}"], perm=[0, 2, 1], name=f"/blocks.{b}/attn/T"),
            helper.make_node("MatMul", [f"qs{b}", f"kt{b}"], [f"a{b}"], name=f"/blocks.{b}/attn/MatMul"),
            helper.make_node("Softmax", [f"a{b}"], [f"p{b}"], axis=-1, name=f"/blocks.{b}/attn/Softmax"),
            helper.make_node("MatMul", [f"p{b}", f"q{b}"], [f"o{b}"], name=f"/blocks.{b}/attn/MatMul_1"),
        ]
        cur = f"o{b}"
    # A softmax that is not attention (a classifier head): must not be counted.
    nodes.append(helper.make_node("Softmax", [cur], ["y"], axis=-1, name="/head/Softmax"))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", seq, dim])
    model = helper.make_model(
        helper.make_graph(nodes, "attn", [x], [y], inits), opset_imports=[helper.make_opsetid("", 17)]
    )
    if external:
        onnx.save(
            model,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=path.name + ".data",
            size_threshold=0,
        )
    else:
        onnx.save(model, str(path))
    return path


@pytest.fixture
def make_cast_graph():
    return cast_graph


@pytest.fixture
def make_attention_graph():
    return attention_graph
