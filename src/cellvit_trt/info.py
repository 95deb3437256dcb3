"""`cellvit-trt info FILE`: what a checkpoint, an exported ONNX graph or an engine (sidecar JSON) holds."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cellvit_trt.errors import InputError, require

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "file", type=Path, help="checkpoint (.pth/.pt), ONNX graph (.onnx), engine or its .json sidecar"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")


def graph_info(path: Path) -> dict[str, Any]:
    """Metadata and I/O of an exported graph, read without its weights."""
    onnx = require("onnx", "ort", f"reading the ONNX graph {path}")

    from cellvit_trt.export.metadata import from_model

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends
        raise InputError(f"graph {path}: not an ONNX model ({type(exc).__name__}: {exc})") from exc

    def io(values: Any) -> dict[str, str]:
        out = {}
        for v in values:
            t = v.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
            out[v.name] = f"{onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name}{dims}"
        return out

    return {
        "kind": "onnx",
        "file": str(path),
        "metadata": from_model(model, f"graph {path}"),
        "inputs": io(model.graph.input),
        "outputs": io(model.graph.output),
        "opset": {i.domain or "ai.onnx": i.version for i in model.opset_import},
        "nodes": len(model.graph.node),
        "producer": f"{model.producer_name} {model.producer_version}",
    }


def checkpoint_info(path: Path) -> dict[str, Any]:
    from cellvit_trt.models.fileformat import check_checkpoint_file

    check_checkpoint_file(path)  # a garbage file is refused before the seconds of importing torch
    require("torch", "export", f"reading the checkpoint {path}")
    from cellvit_trt.models import load_checkpoint

    model, info = load_checkpoint(path)
    params = sum(p.numel() for p in model.parameters())
    return {
        "kind": "checkpoint",
        "file": str(path),
        "metadata": info.to_metadata(),
        "parameters": int(params),
    }


def sidecar_info(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a readable JSON sidecar ({exc})") from exc
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return {"kind": "sidecar", "file": str(path), "metadata": data}


def describe(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InputError(f"info {path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return graph_info(path)
    if suffix == ".json":
        return sidecar_info(path)
    if suffix in ENGINE_SUFFIXES:
        side = path.with_name(path.name + ".json")
        if not side.is_file():
            raise InputError(
                f"info {path}: engine without its sidecar {side.name}; the engine's metadata lives "
                "in the sidecar written by `cellvit-trt build`"
            )
        return {**sidecar_info(side), "kind": "engine", "engine": str(path)}
    return checkpoint_info(path)


def _format(d: dict[str, Any]) -> str:
    lines = [f"{d['kind']}: {d['file']}"]
    for key in ("producer", "opset", "nodes", "parameters", "inputs", "outputs"):
        if key in d:
            lines.append(f"  {key}: {d[key]}")
    lines.append("  metadata:")
    for k, v in d["metadata"].items():
        lines.append(f"    {k}: {json.dumps(v) if isinstance(v, (dict, list)) else v}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    d = describe(Path(args.file))
    print(json.dumps(d, indent=2) if args.json else _format(d))
    return 0
