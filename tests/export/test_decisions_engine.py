"""Tie decisions through a whole deployment graph: a stand-in "model" emits constructed logits (exact ties,
softmax-only ties one ulp apart, binary ties), the DeploymentGraph turns them into fg/type_map.

- `test_tie_decisions_contract`: the graph on ONNX Runtime (runs everywhere);
- `test_tie_decisions_tensorrt`: the same graph built into a TensorRT engine (GPU + TensorRT only), because
  TensorRT's Softmax/ArgMax(TopK) tie behaviour is not documented and must be measured, not assumed.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.export.test_decisions import _constructed_ties, _expected
from torch import nn

S = 16  # the smallest legal tile


class FixedLogits(nn.Module):
    """Returns the same logits for every image (a stand-in for CellViT in the deployment wrapper)."""

    def __init__(self, binary: np.ndarray, types: np.ndarray):
        super().__init__()
        self.register_buffer("binary", torch.from_numpy(binary))
        self.register_buffer("types", torch.from_numpy(types))

    def forward(self, x: torch.Tensor, retrieve_tokens: bool = False) -> dict[str, torch.Tensor]:
        n = x.shape[0]
        zero = x[:, :1] * 0.0  # ties the outputs to the input's batch (exactly +0 for finite pixels)
        return {
            "nuclei_binary_map": self.binary.expand(n, -1, -1, -1) + zero,
            "nuclei_type_map": self.types.expand(n, -1, -1, -1) + zero,
            "hv_map": torch.cat([zero, zero], dim=1),
            "tissue_types": x.mean(dim=(2, 3)).sum(dim=1, keepdim=True).expand(n, 19),
        }


def _logits():
    rng = np.random.default_rng(3)
    types = rng.normal(size=(1, 6, S, S)).astype(np.float32)
    types[:, :, :4, :4] = _constructed_ties()[0][None]
    binary = rng.normal(size=(1, 2, S, S)).astype(np.float32)
    base = np.float32(-0.25)
    binary[0, :, 0, :] = base
    binary[0, 1, 0, ::2] = np.nextafter(base, np.float32(1))  # softmax-only ties -> background
    binary[0, :, 1, :] = 4.0  # exact ties -> background
    return binary, types


@pytest.fixture(scope="module")
def tie_graph(tmp_path_factory):
    from cellvit_trt.export import metadata
    from cellvit_trt.export.wrapper import DeploymentGraph

    binary, types = _logits()
    graph = DeploymentGraph(FixedLogits(binary, types), (0.5,) * 3, (0.5,) * 3).eval()
    path = tmp_path_factory.mktemp("ties") / "ties.onnx"
    torch.onnx.export(
        graph,
        (torch.zeros(1, S, S, 3, dtype=torch.uint8),),
        str(path),
        input_names=["image"],
        output_names=graph.output_names,
        dynamic_axes={n: {0: "N"} for n in ["image", *graph.output_names]},
        opset_version=17,
        dynamo=False,
    )
    import onnx

    model = onnx.load(str(path))
    metadata.attach(
        model,
        {
            "schema": 1,
            "model": "ties",
            "tile_size": S,
            "precision": "fp32",
            "class_names": [str(i) for i in range(6)],
            "magnification": 40,
        },
    )
    onnx.save(model, str(path))
    return path, _expected(binary)[0], _expected(types)[0]


def _check(out, fg, tm):
    for i in range(out["fg"].shape[0]):
        np.testing.assert_array_equal(out["fg"][i], fg)
        np.testing.assert_array_equal(out["type_map"][i], tm)
    assert (fg[:2] == 0).all() and tm[0, 2] == 1 and tm[0, 1] == 0


def test_tie_decisions_contract(tie_graph):
    from cellvit_trt.runtime.backends.onnxrt import OnnxRuntimeBackend

    path, fg, tm = tie_graph
    images = np.full((2, S, S, 3), 128, np.uint8)
    with OnnxRuntimeBackend(path, batch=2) as backend:
        _check(backend.infer(images), fg, tm)


@pytest.mark.tensorrt
def test_tie_decisions_tensorrt(tie_graph, tmp_path):
    from cellvit_trt.engine import BuildSettings, ensure_engine
    from cellvit_trt.runtime.backends.trt import TensorRTBackend

    path, fg, tm = tie_graph
    art = ensure_engine(
        path, BuildSettings(max_batch=2, output=tmp_path / "ties.engine", timing_cache_dir=tmp_path / "tc")
    )
    images = np.full((2, S, S, 3), 128, np.uint8)
    with TensorRTBackend(art.path) as backend:
        _check(backend.infer(images), fg, tm)
