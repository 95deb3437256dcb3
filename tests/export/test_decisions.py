"""fg/type_map make exactly upstream's decisions: argmax(softmax(logits)) with the lowest id winning ties.

Upstream (cellvit==1.0.9) applies torch.softmax to the heads' logits and takes the argmax of the
probabilities. Softmax can map nearly equal logits to exactly equal probabilities; then the lowest class id
wins, which an argmax over the raw logits would not reproduce. The graph's decision subgraph is exported from
the same `Decide` module the deployment graph uses and fed (a) logits of the upstream oracle model and
(b) constructed ties.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import onnxruntime as ort
import pytest
import torch
from tests.export.conftest import TILE, ort_run

from cellvit_trt.export.samples import gate_tiles
from cellvit_trt.export.wrapper import Decide


def _expected(logits: np.ndarray) -> np.ndarray:
    """Upstream's decision: torch.softmax over channels, then the first maximal index."""
    probs = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    return np.argmax(probs, axis=1).astype(np.uint8)


def _numpy_softmax_argmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return np.argmax(e / e.sum(axis=1, keepdims=True), axis=1).astype(np.uint8)


@pytest.fixture(scope="module")
def decide_session(tmp_path_factory):
    path = tmp_path_factory.mktemp("decide") / "decide.onnx"
    torch.onnx.export(
        Decide().eval(),
        (torch.zeros(1, 6, 8, 8),),
        str(path),
        input_names=["logits"],
        output_names=["label"],
        dynamic_axes={"logits": {0: "N", 1: "C", 2: "H", 3: "W"}},
        opset_version=17,
        dynamo=False,
    )
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _run(sess, logits: np.ndarray) -> np.ndarray:
    return sess.run(None, {"logits": np.ascontiguousarray(logits, dtype=np.float32)})[0]


def _constructed_ties() -> np.ndarray:
    """[1, 6, 4, 4] logits: exact ties, softmax-only ties (logits one ulp apart), and clear winners."""
    x = np.zeros((1, 6, 4, 4), np.float32)
    rng = np.random.default_rng(0)
    x[0] = rng.normal(size=(6, 4, 4)).astype(np.float32)
    base = np.float32(0.001)
    up = np.nextafter(base, np.float32(1))  # one ulp above: a larger logit, an identical probability
    x[0, :, 0, 0] = -5.0
    x[0, 2, 0, 0] = x[0, 4, 0, 0] = 3.0  # exact tie between 2 and 4 -> 2
    x[0, :, 0, 1] = 0.0  # all equal -> 0
    x[0, :, 0, 2] = -5.0
    x[0, 1, 0, 2], x[0, 3, 0, 2] = base, up  # 3 has the larger logit, softmax ties them -> 1
    x[0, :, 0, 3] = -5.0
    x[0, 0, 0, 3], x[0, 5, 0, 3] = base, up  # background vs class 5 after softmax -> 0
    return x


def test_constructed_ties_follow_softmax_then_first_index(decide_session):
    x = _constructed_ties()
    want = _expected(x)
    assert (want == _numpy_softmax_argmax(x)).all()  # torch and numpy agree on these cases
    assert want[0, 0, 0] == 2 and want[0, 0, 1] == 0 and want[0, 0, 2] == 1 and want[0, 0, 3] == 0
    assert np.argmax(x, axis=1)[0, 0, 2] == 3  # a logit argmax would decide differently
    got = _run(decide_session, x)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, want)


def test_binary_ties_go_to_background(decide_session):
    base = np.float32(-0.25)
    x = np.array([base, np.nextafter(base, np.float32(1))], np.float32).reshape(1, 2, 1, 1)
    assert _expected(x)[0, 0, 0] == 0
    assert _run(decide_session, x)[0, 0, 0] == 0
    x = np.full((1, 2, 3, 3), 0.7, np.float32)
    assert (_run(decide_session, x) == 0).all()


def test_decisions_on_upstream_oracle_maps(decide_session, upstream):
    """Logits of the upstream CellViT (oracle classes, random weights): the graph's decisions equal
    numpy/torch argmax(softmax) pixel for pixel, including the many exact ties of a saturated type head."""
    if "ray" not in sys.modules:
        sys.modules["ray"] = types.ModuleType("ray")
    from cellvit.models.cell_segmentation.cellvit import CellViT as UpstreamCellViT

    torch.manual_seed(1)
    model = UpstreamCellViT(
        6, 19, embed_dim=64, input_channels=3, depth=4, num_heads=2, extract_layers=[1, 2, 3, 4]
    ).eval()
    size = 128
    with torch.no_grad():
        image = torch.from_numpy(gate_tiles(1, size, seed=4)).permute(0, 3, 1, 2).float() / 255
        out = model((image - 0.5) / 0.5)
    for key in ("nuclei_binary_map", "nuclei_type_map"):
        logits = out[key].numpy()
        # saturate a band: huge equal logits give exact ties in the probabilities
        logits[:, :, :8] = 50.0
        want = _expected(logits)
        np.testing.assert_array_equal(_run(decide_session, logits), want)
        assert (want[:, :8] == 0).all()


def test_full_graph_matches_torch_decisions_where_not_a_near_tie(exported, tiny):
    model, info, _ = tiny
    tiles = gate_tiles(2, TILE, seed=9)
    x = (
        torch.from_numpy(tiles).permute(0, 3, 1, 2).float() / 255 - torch.tensor(info.mean).view(1, 3, 1, 1)
    ) / torch.tensor(info.std).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = model(x)
    got = ort_run(exported["fp32"][0].path, tiles)
    for key, name in (("nuclei_binary_map", "fg"), ("nuclei_type_map", "type_map")):
        probs = torch.softmax(ref[key], dim=1).numpy()
        want = _expected(ref[key].numpy())
        top2 = np.sort(probs, axis=1)[:, -2:]
        clear = (top2[:, 1] - top2[:, 0]) > 1e-5  # FP32 graph vs eager torch differ at rounding level only
        assert clear.mean() > 0.5
        np.testing.assert_array_equal(got[name][clear], want[clear])
        assert (got[name] == want).mean() > 0.999
