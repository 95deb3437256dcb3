"""Graph metadata: one JSON object under `metadata_props["cellvit_trt"]` (ARCHITECTURE.md).

Reading needs only `onnx` (no onnxruntime, no torch): `read_graph_metadata(path)`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cellvit_trt.errors import InputError

METADATA_KEY = "cellvit_trt"
SCHEMA_VERSION = 1


def attach(model: Any, meta: dict[str, Any]) -> None:
    """Set the `cellvit_trt` metadata entry of an onnx.ModelProto, dropping tool markers left by the steps
    before it (e.g. ONNX Runtime's quantiser writes `onnx.infer`): the graph carries one metadata object."""
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = json.dumps(meta, sort_keys=True)


def from_model(model: Any, where: str = "graph") -> dict[str, Any]:
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            try:
                meta = json.loads(prop.value)
            except json.JSONDecodeError as exc:
                raise InputError(f"{where}: metadata '{METADATA_KEY}' is not valid JSON ({exc})") from exc
            if not isinstance(meta, dict):
                raise InputError(f"{where}: metadata '{METADATA_KEY}' is not a JSON object")
            return meta
    raise InputError(f"{where}: no '{METADATA_KEY}' metadata; was it exported with `cellvit-trt export`?")


def read_graph_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of an exported ONNX graph, without loading its weights."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise InputError(f"graph {path}: not found")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise InputError(f"graph {path}: not an ONNX model ({type(exc).__name__}: {exc})") from exc
    return from_model(model, f"graph {path}")
