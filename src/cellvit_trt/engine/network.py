"""Step 1: ONNX file → strongly typed TensorRT network, with every parser error reported by node."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from cellvit_trt.engine.errors import EngineBuildError
from cellvit_trt.engine.trt_api import network_flags, parser_issues, tensorrt_version


@dataclass
class ParsedNetwork:
    """The builder, network and parser stay together: the network references the parser's weights."""

    builder: Any
    network: Any
    parser: Any
    logger: Any

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        out = {}
        for i in range(int(self.network.num_inputs)):
            tensor = self.network.get_input(i)
            out[str(tensor.name)] = tuple(int(d) for d in tensor.shape)
        return out


def parse_onnx(trt: ModuleType, logger: Any, onnx_path: str | Path) -> ParsedNetwork:
    """Parse `onnx_path` (external data next to it is found by path) into a STRONGLY_TYPED network."""
    onnx_path = Path(onnx_path)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    ok = parser.parse_from_file(str(onnx_path))
    issues = parser_issues(parser)
    if not ok or issues:
        lines = [f"  - {issue}" for issue in issues] or [f"  - {m}" for m in logger.errors[-10:]]
        raise EngineBuildError(
            f"TensorRT {tensorrt_version(trt)} could not parse ONNX graph {onnx_path} "
            f"({len(issues)} error(s)):\n"
            + "\n".join(lines)
            + "\nUnsupported operators: re-export with opset 17-20 (TensorRT 10.3 on JetPack 6 does "
            "not parse opset-23 Attention) or see docs/engine.md"
        )
    return ParsedNetwork(builder, network, parser, logger)
