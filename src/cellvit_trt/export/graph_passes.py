"""Small ONNX rewrites applied to every exported graph, and the graph hygiene check.

- `scale_before_qk`: DINO attention computes `softmax((q @ kᵀ) * scale)`. TensorRT fuses multi-head attention
  only when the scale is applied to Q (or K) *before* the first batched matmul, and the unscaled q·kᵀ product
  is also the value most likely to overflow FP16. Moving the scalar Mul onto Q is exact in real arithmetic and
  changes FP32 results only at rounding level.
- `check_hygiene`: no Resize/control flow/data-dependent ops, one uint8 NHWC input, only the batch dynamic,
  and outputs whose non-batch dims are static.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import onnx
from onnx import numpy_helper

from cellvit_trt.errors import CellViTTRTError

FORBIDDEN_OPS = frozenset(
    {
        "Resize",
        "Upsample",
        "If",
        "Loop",
        "Scan",
        "NonZero",
        "NonMaxSuppression",
        "Unique",
        "SequenceConstruct",
        "SplitToSequence",
        "RandomNormal",
        "RandomUniform",
        "RandomNormalLike",
        "RandomUniformLike",
        "Dropout",
    }
)


class GraphHygieneError(CellViTTRTError):
    """The exported graph contains constructs a deployment graph must not have (export bug or odd model)."""


def consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            if name:
                out[name].append(node)
    return out


def _scalar_constant(graph: onnx.GraphProto, name: str) -> float | None:
    for init in graph.initializer:
        if init.name == name:
            arr = numpy_helper.to_array(init)
            return float(arr.reshape(-1)[0]) if arr.size == 1 else None
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            for attr in node.attribute:
                if attr.name == "value":
                    arr = numpy_helper.to_array(attr.t)
                    return float(arr.reshape(-1)[0]) if arr.size == 1 else None
    return None


def scale_before_qk(model: onnx.ModelProto) -> int:
    """Rewrite MatMul(q, k^T) -> Mul(scale) -> Softmax to Mul(q, scale) -> MatMul -> Softmax; count."""
    graph = model.graph
    users = consumers(graph)
    outputs = {o.name for o in graph.output}
    rewrites = 0
    moved: dict[str, str] = {}
    for matmul in graph.node:
        if matmul.op_type != "MatMul":
            continue
        nxt = users.get(matmul.output[0], [])
        if len(nxt) != 1 or nxt[0].op_type != "Mul" or matmul.output[0] in outputs:
            continue
        mul = nxt[0]
        other = mul.input[1] if mul.input[0] == matmul.output[0] else mul.input[0]
        if _scalar_constant(graph, other) is None:
            continue
        after = users.get(mul.output[0], [])
        if len(after) != 1 or after[0].op_type != "Softmax" or mul.output[0] in outputs:
            continue
        softmax = after[0]
        q = matmul.input[0]
        scaled = f"{mul.output[0]}__scaled_q"
        del mul.input[:]
        mul.input.extend([q, other])
        mul.output[0] = scaled
        matmul.input[0] = scaled
        softmax.input[0] = matmul.output[0]
        moved[mul.name] = matmul.name
        rewrites += 1
    if moved:
        # keep topological order: each moved Mul now comes right before its MatMul
        nodes = [onnx.NodeProto.FromString(n.SerializeToString()) for n in graph.node]
        by_name = {n.name: n for n in nodes}
        order = []
        for n in nodes:
            if n.name in moved:
                continue
            order.extend(by_name[m] for m, mm in moved.items() if mm == n.name)
            order.append(n)
        del graph.node[:]
        graph.node.extend(order)
    return rewrites


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [
        d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
        for d in value.type.tensor_type.shape.dim
    ]


def check_hygiene(model: onnx.ModelProto, tile_size: int) -> dict[str, object]:
    """Raise GraphHygieneError on forbidden constructs; return a summary (op counts, I/O shapes)."""
    graph = model.graph
    ops = Counter(n.op_type for n in graph.node)
    problems: list[str] = []
    bad = sorted(set(ops) & FORBIDDEN_OPS)
    if bad:
        problems.append(
            f"forbidden ops {bad} (Resize means a pos-embed or rel-pos interpolation was not frozen)"
        )
    if len(graph.input) != 1:
        problems.append(f"expected exactly one graph input 'image', got {[i.name for i in graph.input]}")
    else:
        inp = graph.input[0]
        dims = _dims(inp)
        if inp.type.tensor_type.elem_type != onnx.TensorProto.UINT8:
            problems.append("input 'image' must be uint8")
        if len(dims) != 4 or dims[1:] != [tile_size, tile_size, 3] or isinstance(dims[0], int):
            problems.append(
                f"input 'image' must be [N, {tile_size}, {tile_size}, 3] with a dynamic N, got {dims}"
            )
    for out in graph.output:
        dims = _dims(out)
        if any(not isinstance(d, int) for d in dims[1:]):
            problems.append(f"output {out.name!r} has dynamic non-batch dims {dims}")
    float_shape_math = _float_shape_math(graph)
    if float_shape_math:
        problems.append(
            f"shape arithmetic in floating point (e.g. from an interpolation scale): {float_shape_math[:3]}"
        )
    if problems:
        raise GraphHygieneError("exported graph failed the hygiene check: " + "; ".join(problems))
    return {
        "ops": dict(sorted(ops.items())),
        "nodes": len(graph.node),
        "shape_ops": ops.get("Shape", 0),
        "inputs": {i.name: _dims(i) for i in graph.input},
        "outputs": {o.name: _dims(o) for o in graph.output},
    }


def _float_shape_math(graph: onnx.GraphProto) -> list[str]:
    """Nodes that turn shape values (derived from `Shape` outputs) into floats: TensorRT wants shape tensors
    to stay integer; float shape math (scale factors, Floor) usually means an un-frozen interpolation."""
    derived: set[str] = set()
    bad: list[str] = []
    for node in graph.node:
        if node.op_type == "Shape":
            derived.update(node.output)
            continue
        if not any(i in derived for i in node.input):
            continue
        if (
            node.op_type
            in (
                "Reshape",
                "Expand",
                "Tile",
                "Slice",
                "ConstantOfShape",
                "Range",
                "Pad",
                "Squeeze",
                "Unsqueeze",
            )
            and node.input
            and node.input[0] not in derived
        ):
            continue  # the shape is consumed here; the output is data, not shape
        derived.update(node.output)
        if node.op_type == "Cast":
            to = next((a.i for a in node.attribute if a.name == "to"), None)
            if to in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE):
                bad.append(node.name or node.op_type)
        elif node.op_type in ("Floor", "Ceil", "Round"):
            bad.append(node.name or node.op_type)
    return bad


def initializer_bytes(model: onnx.ModelProto) -> int:
    total = 0
    for init in model.graph.initializer:
        n = int(np.prod(init.dims)) if len(init.dims) else 1
        total += n * onnx.helper.tensor_dtype_to_np_dtype(init.data_type).itemsize
    return total
