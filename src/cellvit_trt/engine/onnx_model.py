"""What the builder and the engine cache read from an ONNX file without TensorRT: digest, I/O, metadata.

The digest covers the graph file and any external-data files it references (large SAM-H graphs keep weights
outside the 2 GB protobuf), so changing weights alone invalidates cached engines.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cellvit_trt.errors import InputError, require

METADATA_KEY = "cellvit_trt"

# Ops that may sit between the attention MatMuls and the Softmax without breaking the pattern
# (scale, bias, reshapes, casts). Used to count attention blocks in the graph.
_ATTENTION_PASS_THROUGH = {
    "Mul",
    "Div",
    "Add",
    "Cast",
    "Reshape",
    "Transpose",
    "Where",
    "Identity",
    "Squeeze",
    "Unsqueeze",
    "DequantizeLinear",
    "QuantizeLinear",
}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple[int | str, ...]  # int for fixed dims, the symbol (or "?") for dynamic ones

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass(frozen=True)
class OnnxModelInfo:
    path: Path
    sha256: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    opset: int
    metadata: dict[str, Any] = field(default_factory=dict)
    attention_blocks: int = 0
    external_data: tuple[str, ...] = ()


def _spec(value_info: Any, onnx: Any) -> TensorSpec:
    ttype = value_info.type.tensor_type
    dims: list[int | str] = []
    for d in ttype.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        else:
            dims.append(d.dim_param or "?")
    try:
        dtype = str(onnx.helper.tensor_dtype_to_np_dtype(ttype.elem_type))
    except (KeyError, ValueError, TypeError):
        dtype = onnx.TensorProto.DataType.Name(ttype.elem_type).lower()
    return TensorSpec(value_info.name, dtype, tuple(dims))


def _external_files(model: Any) -> list[str]:
    names = set()
    tensors = list(model.graph.initializer)
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                tensors.append(attr.t)
    for t in tensors:
        if t.data_location == 1:  # TensorProto.EXTERNAL
            for entry in t.external_data:
                if entry.key == "location":
                    names.add(entry.value)
    return sorted(names)


def onnx_digest(path: Path, external: list[str] | tuple[str, ...] = ()) -> str:
    """SHA-256 over the graph file, then each external-data file (name and bytes) in sorted order."""
    h = hashlib.sha256()
    files = [(None, path)] + [(name, path.parent / name) for name in sorted(external)]
    for name, p in files:
        if name is not None:
            h.update(b"\0external:" + name.encode() + b"\0")
        try:
            with open(p, "rb") as fh:
                while block := fh.read(1 << 20):
                    h.update(block)
        except FileNotFoundError as exc:
            raise InputError(f"ONNX graph {path}: external data file {p} is missing") from exc
    return h.hexdigest()


def count_attention_blocks(model: Any) -> int:
    """Softmax nodes fed by a MatMul and feeding one (through scale/bias/reshape ops)."""
    producer = {out: n for n in model.graph.node for out in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def reaches(node: Any, forward: bool, depth: int = 4) -> bool:
        frontier = [node]
        for _ in range(depth):
            nxt = []
            for n in frontier:
                neighbours = (
                    [c for o in n.output for c in consumers.get(o, [])]
                    if forward
                    else [producer[i] for i in n.input if i in producer]
                )
                for m in neighbours:
                    if m.op_type in ("MatMul", "Gemm", "Einsum"):
                        return True
                    if m.op_type in _ATTENTION_PASS_THROUGH:
                        nxt.append(m)
            frontier = nxt
        return False

    return sum(
        1
        for n in model.graph.node
        if n.op_type == "Softmax" and reaches(n, forward=False) and reaches(n, forward=True)
    )


def read_metadata(model: Any, path: Path) -> dict[str, Any]:
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            try:
                value = json.loads(prop.value)
            except json.JSONDecodeError as exc:
                raise InputError(
                    f"ONNX graph {path}: metadata_props['{METADATA_KEY}'] is not valid JSON ({exc})"
                ) from exc
            if not isinstance(value, dict):
                raise InputError(f"ONNX graph {path}: metadata_props['{METADATA_KEY}'] must be a JSON object")
            return value
    return {}


def inspect_onnx(path: str | Path) -> OnnxModelInfo:
    """Read an ONNX file's digest, I/O, opset, `cellvit_trt` metadata and attention-block count."""
    path = Path(path)
    onnx = require("onnx", "trt", "reading the ONNX graph before a TensorRT build")
    if not path.is_file():
        raise InputError(f"ONNX graph {path}: file not found")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError and others for a non-ONNX file
        raise InputError(f"ONNX graph {path}: not a readable ONNX model ({exc})") from exc
    if not model.graph.node and not model.graph.input:
        raise InputError(f"ONNX graph {path}: the file holds no graph (empty or not ONNX)")
    initializers = {t.name for t in model.graph.initializer}
    external = _external_files(model)
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    return OnnxModelInfo(
        path=path,
        sha256=onnx_digest(path, external),
        inputs=tuple(_spec(v, onnx) for v in model.graph.input if v.name not in initializers),
        outputs=tuple(_spec(v, onnx) for v in model.graph.output),
        opset=int(opset),
        metadata=read_metadata(model, path),
        attention_blocks=count_attention_blocks(model),
        external_data=tuple(external),
    )
