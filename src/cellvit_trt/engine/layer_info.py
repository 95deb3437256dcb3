"""Layer information from the engine inspector, and a check that attention fused.

Heuristic (documented in docs/engine.md), applied to the inspector JSON of a DETAILED-verbosity build:
- fused: a layer whose name, type, tactic or metadata mentions a fused attention kernel — "mha" as a word,
  "fmha", "flash", "multi(_)head(_)attention", "kgen_mha" (the tokens NVIDIA's trt-perf-analysis uses);
- unfused: a SoftMax layer whose input comes from a matrix-multiply layer and whose output feeds one, through
  at most `MAX_HOPS` layers that only move or rescale data (Shuffle, Reformat, ElementWise, Cast, ...);
- the graph's own count of MatMul→Softmax→MatMul blocks (from the ONNX) says whether attention was expected.
Verdicts: "none" (no attention expected or seen), "fused", "unfused" (some blocks run as separate GEMM +
softmax kernels: slower, more memory), "unconfirmed" (attention expected, neither evidence found; e.g. hidden
inside a Myelin ForeignNode whose kernel names are not shown) and "unknown" (no detailed layer information).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

MAX_HOPS = 4
_FUSED = re.compile(r"fmha|flash|multi_?head_?attention|kgen_mha|(^|[^a-z0-9])mha([^a-z0-9]|$)")
_MATMUL = re.compile(r"matrixmultiply|matmul|gemm")
_SOFTMAX = re.compile(r"softmax")
_PASS_THROUGH = re.compile(
    r"shuffle|reformat|elementwise|cast|identity|noop|scale|pointwise|quantize|reshape"
)


@dataclass(frozen=True)
class AttentionReport:
    verdict: str
    expected_blocks: int
    fused_layers: tuple[str, ...] = ()
    unfused_softmax: tuple[str, ...] = field(default=())

    @property
    def warning(self) -> str | None:
        if self.verdict == "unfused":
            return (
                f"attention did not fuse: {len(self.unfused_softmax)} MatMul→Softmax→MatMul "
                f"pattern(s) run as separate layers (e.g. {self.unfused_softmax[0]!r}); "
                "expect lower speed and more memory. "
                "Common causes: Cast/Reshape chains between the MatMuls and the Softmax, dynamic sequence "
                "length, head size not a multiple of 8 on TensorRT < 10.14, or the scale applied after QKᵀ"
            )
        if self.verdict == "unconfirmed":
            return (
                f"could not confirm that attention fused: the graph has {self.expected_blocks} attention "
                "block(s) but the layer information names no fused attention kernel (it may be inside a "
                "Myelin ForeignNode); profile the engine to be sure"
            )
        return None

    def as_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "expected_blocks": self.expected_blocks,
            "fused_layers": list(self.fused_layers),
            "unfused_softmax": list(self.unfused_softmax),
        }


def layers_of(info: Any) -> list[Any]:
    """The layers of inspector output: TensorRT 10/11 give {"Layers": [...]}, some tools a bare list."""
    if isinstance(info, str):
        info = json.loads(info)
    if isinstance(info, dict):
        info = info.get("Layers", [])
    return list(info) if isinstance(info, list) else []


def _names(tensors: Any) -> list[str]:
    out = []
    for t in tensors or []:
        out.append(t.get("Name", "") if isinstance(t, dict) else str(t))
    return [n for n in out if n]


def _text(layer: dict[str, Any]) -> str:
    return " ".join(str(layer.get(k, "")) for k in ("Name", "LayerType", "TacticName", "Metadata")).lower()


def _type(layer: dict[str, Any]) -> str:
    return str(layer.get("LayerType", "")).lower()


def check_attention(info: Any, expected_blocks: int) -> AttentionReport:
    layers = layers_of(info)
    detailed = [lay for lay in layers if isinstance(lay, dict)]
    if not detailed:
        return AttentionReport("unknown" if expected_blocks else "none", expected_blocks)
    fused = tuple(str(lay.get("Name", "")) for lay in detailed if _FUSED.search(_text(lay)))
    producer: dict[str, dict[str, Any]] = {}
    consumers: dict[str, list[dict[str, Any]]] = {}
    for lay in detailed:
        for name in _names(lay.get("Outputs")):
            producer[name] = lay
        for name in _names(lay.get("Inputs")):
            consumers.setdefault(name, []).append(lay)

    def reaches_matmul(layer: dict[str, Any], forward: bool) -> bool:
        frontier = [layer]
        for _ in range(MAX_HOPS):
            nxt = []
            for lay in frontier:
                if forward:
                    neighbours = [c for o in _names(lay.get("Outputs")) for c in consumers.get(o, [])]
                else:
                    neighbours = [producer[i] for i in _names(lay.get("Inputs")) if i in producer]
                for m in neighbours:
                    if _MATMUL.search(_type(m)) and not _FUSED.search(_text(m)):
                        return True
                    if _PASS_THROUGH.search(_type(m)):
                        nxt.append(m)
            frontier = nxt
        return False

    unfused = tuple(
        str(lay.get("Name", ""))
        for lay in detailed
        if _SOFTMAX.search(_type(lay)) and reaches_matmul(lay, False) and reaches_matmul(lay, True)
    )
    if unfused:
        verdict = "unfused"
    elif fused:
        verdict = "fused"
    elif expected_blocks:
        verdict = "unconfirmed"
    else:
        verdict = "none"
    return AttentionReport(verdict, expected_blocks, fused, unfused)


def engine_layer_info(trt: Any, engine: Any) -> dict[str, Any] | None:
    """The inspector's JSON for the whole engine, parsed; None where this TensorRT offers no inspector."""
    make = getattr(engine, "create_engine_inspector", None)
    if make is None:
        return None
    inspector = make()
    text = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
    data = json.loads(text) if text else {}
    return data if isinstance(data, dict) else {"Layers": data}
