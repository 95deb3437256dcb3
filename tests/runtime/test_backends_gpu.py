"""The streaming backends on a real GPU (skipped without one): PyTorch-CUDA in the cuda-python layer and
TensorRT against the CPU reference, two batches in flight, CUDA graphs, buffers freed."""

from __future__ import annotations

import numpy as np
import pytest

from cellvit_trt.runtime.backends import export_cached, open_backend

TILE = 128


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from cellvit_trt.models import build_model, save_checkpoint

    d = tmp_path_factory.mktemp("tiny-gpu")
    torch.manual_seed(0)
    ckpt = d / "tiny.pth"
    save_checkpoint(ckpt, build_model("tiny").eval())
    return ckpt, d


def _tiles(n, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, TILE, TILE, 3), dtype=np.uint8)


def _reference(ckpt, batches):
    with open_backend(ckpt, backend="torch", tile_size=TILE, batch=4) as ref:
        return [ref.infer(b) for b in batches]


def _agree(a, b, hv_mae):
    """An FP16 engine against the FP32 CPU reference (random weights: small decision margins)."""
    assert (a["fg"] == b["fg"]).mean() > 0.97
    assert (a["type_map"] == b["type_map"]).mean() > 0.95
    assert np.abs(a["hv"].astype(np.float32) - b["hv"].astype(np.float32)).mean() < hv_mae


def _two_in_flight(be, batches):
    out, pending = [], []
    for b in batches:
        if len(pending) == be.max_in_flight:
            out.append(be.result(pending.pop(0)))
        pending.append(be.submit(b))
    out += [be.result(h) for h in pending]
    return out


@pytest.mark.gpu
@pytest.mark.parametrize(("precision", "fg_agree", "hv_mae"), [("fp32", 0.99, 0.01), ("fp16", 0.97, 0.05)])
def test_torch_cuda_streaming_matches_cpu_reference(tiny, precision, fg_agree, hv_mae):
    """FP32 differs from the CPU only by GPU arithmetic (TF32 convolutions); FP16 autocast by more, on a model
    with random weights whose decisions have small margins: hence the looser bounds."""
    ckpt, _ = tiny
    batches = [_tiles(4, s) for s in range(5)] + [_tiles(2, 9)]
    ref = _reference(ckpt, batches)
    with open_backend(ckpt, backend="torch-cuda", tile_size=TILE, batch=4, precision=precision) as be:
        assert be.kind == "torch-cuda" and be.max_in_flight == 2
        be.timeline = []
        out = _two_in_flight(be, batches)
        assert set(be.last_timings) == {"h2d", "compute", "d2h"} and len(be.timeline) == len(batches)
    assert be.slots == []
    for a, b in zip(out, ref, strict=True):
        assert a["hv"].dtype == np.float16 and a["fg"].dtype == np.uint8 and a["fg"].shape == b["fg"].shape
        assert (a["fg"] == b["fg"]).mean() > fg_agree
        assert np.abs(a["hv"].astype(np.float32) - b["hv"].astype(np.float32)).mean() < hv_mae


@pytest.mark.tensorrt
@pytest.mark.parametrize("graphs", [False, True])
def test_tensorrt_engine_matches_cpu_reference(tiny, graphs):
    ckpt, d = tiny
    onnx = export_cached(ckpt, TILE, "fp16", cache_dir=d / "cache")
    batches = [_tiles(4, s) for s in range(5)] + [_tiles(3, 9)]
    ref = _reference(ckpt, batches)
    with open_backend(onnx, backend="tensorrt", batch=4, cuda_graphs=graphs) as be:
        assert be.kind == "tensorrt" and be.tile_size == TILE and be.max_batch == 4
        out = _two_in_flight(be, batches)
    assert be.slots == []
    for a, b in zip(out, ref, strict=True):
        _agree(a, b, hv_mae=0.05)
