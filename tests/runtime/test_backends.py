"""Backend contract on the tiny model: ONNX Runtime (graph from the export stage) and PyTorch (the export
stage's wrapper module) return the same outputs dict, exactly per the deployment-graph table."""

from __future__ import annotations

import os

import numpy as np
import pytest

from cellvit_trt.errors import DeviceError, InputError
from cellvit_trt.runtime.backends import choose_backend, export_cached, open_backend
from cellvit_trt.runtime.backends.onnxrt import resolve_providers
from cellvit_trt.runtime.cuda.device import gpu_available

TILE = 128
CONTRACT = {
    "fg": (np.uint8, 3),
    "hv": (np.float16, 4),
    "type_map": (np.uint8, 3),
    "tissue_logits": (np.float32, 2),
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from cellvit_trt.models import build_model, save_checkpoint

    d = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    ckpt = d / "tiny.pth"
    save_checkpoint(ckpt, build_model("tiny").eval())
    # no export gate here: this module's first test is that comparison, with its own tolerances
    onnx = export_cached(ckpt, TILE, "fp32", cache_dir=d / "cache", gate=False)
    return ckpt, onnx


def tiles(n, seed=0):
    """Textured tiles (not flat noise) so that the model's decisions are not all ties."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:TILE, :TILE]
    base = (127 + 100 * np.sin(xx / 7.0 + seed) * np.cos(yy / 11.0)).astype(np.int32)
    img = base[None, :, :, None] + rng.integers(-40, 40, (n, TILE, TILE, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def test_onnxruntime_and_torch_agree(tiny):
    ckpt, onnx = tiny
    images = tiles(3)
    with open_backend(onnx, batch=4) as ort:
        assert (ort.kind, ort.tile_size, ort.max_batch) == ("onnxruntime", TILE, 4)
        assert ort.meta.class_names[0] == "Background" and ort.meta.tile_size == TILE
        a = ort.infer(images)
        one = ort.infer(images[:1])  # a partial batch
    with open_backend(ckpt, backend="torch", tile_size=TILE, batch=4) as pt:
        b = pt.infer(images)
    for out in (a, b):
        assert set(out) == set(CONTRACT)
        for k, (dtype, ndim) in CONTRACT.items():
            assert out[k].dtype == dtype and out[k].ndim == ndim and out[k].shape[0] == 3, k
    assert a["hv"].shape == (3, 2, TILE, TILE) and a["tissue_logits"].shape[1] == len(ort.meta.tissue_names)
    assert (a["fg"] == b["fg"]).mean() > 0.999
    assert (a["type_map"] == b["type_map"]).mean() > 0.999
    np.testing.assert_allclose(a["hv"].astype(np.float32), b["hv"].astype(np.float32), atol=2e-3)
    np.testing.assert_allclose(a["tissue_logits"], b["tissue_logits"], atol=1e-3, rtol=1e-3)
    for k in a:
        np.testing.assert_array_equal(one[k][0], a[k][0])


def test_export_is_cached_by_checkpoint_hash(tiny, tmp_path):
    ckpt, onnx = tiny
    mtime = os.stat(onnx).st_mtime_ns
    again = export_cached(ckpt, TILE, "fp32", cache_dir=onnx.parent)
    assert again == onnx and os.stat(again).st_mtime_ns == mtime


def test_input_boundary_names_the_tensor(tiny):
    _, onnx = tiny
    with open_backend(onnx, batch=2) as be:
        with pytest.raises(InputError, match=rf"tensor 'image': got uint8\[3, {TILE}, {TILE}, 3\].*N <= 2"):
            be.infer(tiles(3))
        with pytest.raises(InputError, match=r"got float32"):
            be.infer(tiles(1).astype(np.float32))
        with pytest.raises(InputError, match=r"expected uint8\[N,128,128,3\]"):
            be.infer(np.zeros((1, 64, 64, 3), np.uint8))
    with pytest.raises(RuntimeError, match="not active"):
        be.infer(tiles(1))


def test_selection_and_model_errors(tiny, tmp_path):
    _, onnx = tiny
    assert choose_backend("onnx") in ("onnxruntime", "tensorrt")
    assert choose_backend("engine") == "tensorrt"
    with pytest.raises(InputError, match="cannot run a TensorRT engine"):
        choose_backend("engine", "onnxruntime")
    with pytest.raises(InputError, match="needs a checkpoint"):
        choose_backend("onnx", "torch")
    with pytest.raises(InputError, match="no such file"):
        open_backend(tmp_path / "missing.onnx")
    odd = tmp_path / "model.xyz"
    odd.write_bytes(b"0")
    with pytest.raises(InputError, match="unknown file type"):
        open_backend(odd)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a graph")
    with pytest.raises(InputError, match="broken.onnx"):
        open_backend(broken, backend="onnxruntime").activate()


def test_provider_lists():
    avail = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert resolve_providers(None, avail) == ["CPUExecutionProvider"]
    assert resolve_providers("auto", avail) == avail == resolve_providers(["auto"], avail)
    assert resolve_providers(["cuda"], avail) == avail
    with pytest.raises(DeviceError, match="TensorrtExecutionProvider"):
        resolve_providers(["tensorrt", "cuda"], avail)


@pytest.mark.skipif(gpu_available(), reason="checks the no-GPU message; this machine has a GPU")
def test_engine_without_gpu_is_a_clear_device_error(tmp_path):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"plan")
    be = open_backend(engine)
    with pytest.raises(DeviceError, match="GPU|driver|cuda"):
        be.activate()
    assert not be.is_active
