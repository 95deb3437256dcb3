"""Deployment ONNX export: uint8 NHWC in, decisions out, precision (FP32/FP16/INT8) in the graph, parity gate.

Light to import: torch/onnx/onnxruntime load inside the functions that need them.

    from cellvit_trt.export import ExportSettings, export
    result = export(ExportSettings(checkpoint=ck, output="cellvit.fp16.onnx", precision="fp16"))
    from cellvit_trt.export.gate import load_thresholds, run_gate        # reusable for engines
"""

from __future__ import annotations

from typing import Any

from cellvit_trt.export.settings import PRECISIONS, ExportSettings

__all__ = ["PRECISIONS", "ExportSettings", "export", "load_thresholds", "read_graph_metadata", "run_gate"]


def export(settings: ExportSettings, model: Any = None, info: Any = None):
    from cellvit_trt.export.exporter import export as _export

    return _export(settings, model, info)


def __getattr__(name: str):
    if name in ("load_thresholds", "run_gate"):
        from cellvit_trt.export import gate

        return getattr(gate, name)
    if name == "read_graph_metadata":
        from cellvit_trt.export.metadata import read_graph_metadata

        return read_graph_metadata
    raise AttributeError(name)
