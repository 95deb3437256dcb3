"""FP16 recipe as an explicit ONNX rewrite, so a strongly typed TensorRT network gets exactly these dtypes.

Every float node computes in FP16 except the FP32 set:
- `LayerNormalization` (all ViT/SAM LayerNorms, and SAM's LayerNorm2d, which export swaps to one node):
  FP16 LayerNorm overflows on the sum of squares after attention (tensorrt.md §11);
- the in-graph input normalisation (`/normalize/` scope): exact upstream pixels;
- the decisions (`/decide_*` scopes: Softmax + ArgMax over the heads' logits);
- optionally the attention Softmax (`fp32_softmax=True`; off by default because a Cast between the first
  batched matmul and the Softmax breaks TensorRT's fused attention, whose kernels accumulate in FP32 anyway).
Boundaries get explicit `Cast` nodes; initializers are stored in the dtype of the node that reads them (one
FP16 copy when FP32 and FP16 nodes share one). Graph outputs keep the dtypes promised in ARCHITECTURE.md.
Q/DQ nodes (INT8 recipe) are treated as FP16 nodes: their scales become FP16 (opset >= 19), so INT8 layers sit
in an FP16 network as TensorRT's explicit quantisation expects.

Types are propagated with simple per-op rules instead of ONNX shape inference, which cannot serialise > 2 GB
(SAM-H) models.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

log = logging.getLogger(__name__)

F32, F16 = TensorProto.FLOAT, TensorProto.FLOAT16
FLOATS = (F32, F16)
FP16_MAX = float(np.finfo(np.float16).max)

# outputs that keep the dtype of input 0 (data movement and elementwise ops)
_NON_FLOAT_OUT = {
    "Shape": TensorProto.INT64,
    "Size": TensorProto.INT64,
    "ArgMax": TensorProto.INT64,
    "ArgMin": TensorProto.INT64,
    "NonZero": TensorProto.INT64,
    "Equal": TensorProto.BOOL,
    "Less": TensorProto.BOOL,
    "Greater": TensorProto.BOOL,
    "LessOrEqual": TensorProto.BOOL,
    "GreaterOrEqual": TensorProto.BOOL,
    "Not": TensorProto.BOOL,
    "And": TensorProto.BOOL,
    "Or": TensorProto.BOOL,
    "Xor": TensorProto.BOOL,
    "IsNaN": TensorProto.BOOL,
    "IsInf": TensorProto.BOOL,
}
# inputs whose dtype does not matter to the node (shape-only readers): never cast them
_TYPE_AGNOSTIC_INPUTS = {"Shape": {0}, "Size": {0}, "Cast": {0}}
# inputs that are indices/shapes, never floats we convert
_INT_INPUTS = {
    "Reshape": {1},
    "Expand": {1},
    "Tile": {1},
    "Slice": {1, 2, 3, 4},
    "Gather": {1},
    "Unsqueeze": {1},
    "Squeeze": {1},
    "ConstantOfShape": {0},
    "Pad": {1, 3},
    "TopK": {1},
    "Range": set(),
    "Where": {0},
    "QuantizeLinear": {2},
    "DequantizeLinear": {0, 2},
    "ReduceMean": {1},
    "ReduceSum": {1},
    "ReduceMax": {1},
    "ReduceMin": {1},
    "Split": {1},
    "CumSum": {1},
}
# input whose dtype defines the float output dtype
_DATA_INPUT = {"Where": 1, "DequantizeLinear": 1}


def _tensor_to_fp16(t: TensorProto, new_name: str) -> TensorProto:
    arr = numpy_helper.to_array(t).astype(np.float32)
    if arr.size and np.abs(arr).max() > FP16_MAX:
        log.warning(
            "initializer %s has values beyond the FP16 range (max |x| = %.3g); clipped to +-65504",
            t.name,
            float(np.abs(arr).max()),
        )
        arr = np.clip(arr, -FP16_MAX, FP16_MAX)
    return numpy_helper.from_array(arr.astype(np.float16), new_name)


def keep_fp32_predicate(scopes: Iterable[str], fp32_ops: Iterable[str]) -> Callable[[onnx.NodeProto], bool]:
    scopes, ops = tuple(scopes), frozenset(fp32_ops)

    def keep(node: onnx.NodeProto) -> bool:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            return (
                False  # Q/DQ are named after the tensor they quantise (maybe in an FP32 scope): always FP16
            )
        return node.op_type in ops or any(node.name.startswith(s) for s in scopes)

    return keep


def convert_to_fp16(model: onnx.ModelProto, keep_fp32: Callable[[onnx.NodeProto], bool]) -> dict[str, int]:
    """Rewrite `model` in place to the mixed FP16/FP32 recipe. Returns counts for the export report."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    dtype: dict[str, int] = {t.name: t.data_type for t in graph.initializer}
    dtype.update({i.name: i.type.tensor_type.elem_type for i in graph.input})
    declared_out = {o.name: o.type.tensor_type.elem_type for o in graph.output}
    fp16_inits: dict[str, str] = {}
    casts: dict[tuple[str, int], str] = {}
    new_nodes: list[onnx.NodeProto] = []
    stats = {"fp32_nodes": 0, "fp16_nodes": 0, "casts": 0, "fp16_initializers": 0}

    def cast_to(name: str, to: int, where: str) -> str:
        if name in inits and inits[name].data_type == F32 and to == F16:
            if name not in fp16_inits:
                fp16_inits[name] = f"{name}__fp16"
                graph.initializer.append(_tensor_to_fp16(inits[name], fp16_inits[name]))
                dtype[fp16_inits[name]] = F16
                stats["fp16_initializers"] += 1
            return fp16_inits[name]
        key = (name, to)
        if key not in casts:
            casts[key] = f"{name}__to_{'fp16' if to == F16 else 'fp32'}"
            new_nodes.append(
                helper.make_node(
                    "Cast",
                    [name],
                    [casts[key]],
                    to=to,
                    name=f"{where}/Cast_{'fp16' if to == F16 else 'fp32'}_{len(casts)}",
                )
            )
            dtype[casts[key]] = to
            stats["casts"] += 1
        return casts[key]

    for node in list(graph.node):
        target = F32 if keep_fp32(node) else F16
        op = node.op_type
        if op == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type == F32 and target == F16:
                    attr.t.CopyFrom(_tensor_to_fp16(attr.t, attr.t.name))
                if attr.name == "value":
                    dtype[node.output[0]] = attr.t.data_type
            new_nodes.append(node)
            continue
        skip = _TYPE_AGNOSTIC_INPUTS.get(op, set()) | _INT_INPUTS.get(op, set())
        for i, name in enumerate(node.input):
            if not name or i in skip or dtype.get(name) not in FLOATS:
                continue
            if dtype[name] != target:
                node.input[i] = cast_to(name, target, node.name or op)
        touches_float = any(dtype.get(n) in FLOATS for n in node.input if n)
        if op == "Cast":
            to = next(a.i for a in node.attribute if a.name == "to")
            if to in FLOATS and target == F16 and node.output[0] not in declared_out:
                for a in node.attribute:
                    if a.name == "to":
                        a.i = F16
                to = F16
            dtype[node.output[0]] = to
        elif op == "ConstantOfShape":
            if not any(a.name == "value" for a in node.attribute):  # spec default: float32 zero
                node.attribute.append(
                    helper.make_attribute("value", numpy_helper.from_array(np.zeros(1, np.float32)))
                )
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type == F32 and target == F16:
                    attr.t.CopyFrom(_tensor_to_fp16(attr.t, attr.t.name))
            dtype[node.output[0]] = next(a.t.data_type for a in node.attribute if a.name == "value")
        elif op in _NON_FLOAT_OUT:
            for out in node.output:
                dtype[out] = _NON_FLOAT_OUT[op]
        elif op == "QuantizeLinear":
            zp = node.input[2] if len(node.input) > 2 else ""
            dtype[node.output[0]] = inits[zp].data_type if zp in inits else TensorProto.UINT8
        else:
            src = node.input[_DATA_INPUT.get(op, 0)] if node.input else ""
            out_type = dtype.get(src, F32)
            for out in node.output:
                dtype[out] = out_type
        if touches_float:
            stats["fp32_nodes" if target == F32 else "fp16_nodes"] += 1
        new_nodes.append(node)

    # graph outputs keep their promised dtypes
    for out in graph.output:
        want = declared_out[out.name]
        if dtype.get(out.name) != want and dtype.get(out.name) in FLOATS:
            raw = f"{out.name}__raw"
            for node in new_nodes:
                for i, name in enumerate(node.output):
                    if name == out.name:
                        node.output[i] = raw
                for i, name in enumerate(node.input):
                    if name == out.name:
                        node.input[i] = raw
            new_nodes.append(
                helper.make_node("Cast", [raw], [out.name], to=want, name=f"/output/{out.name}/Cast")
            )
            stats["casts"] += 1
    del graph.node[:]
    graph.node.extend(
        _toposort(new_nodes, {i.name for i in graph.input} | {t.name for t in graph.initializer})
    )
    used = {n for node in graph.node for n in node.input}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    del graph.value_info[:]  # stale types; consumers re-infer
    return stats


def _toposort(nodes: list[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    """Stable topological order (inserted Casts are appended; place each after its producer)."""
    producer = {out: i for i, n in enumerate(nodes) for out in n.output}
    done: set[int] = set()
    order: list[onnx.NodeProto] = []
    ready = set(available)

    def visit(i: int) -> None:
        stack = [(i, False)]
        while stack:
            j, expanded = stack.pop()
            if j in done:
                continue
            if expanded:
                done.add(j)
                order.append(nodes[j])
                ready.update(nodes[j].output)
                continue
            stack.append((j, True))
            for name in nodes[j].input:
                if name and name not in ready and name in producer and producer[name] not in done:
                    stack.append((producer[name], False))

    for i in range(len(nodes)):
        visit(i)
    return order
