"""ONNX inspection for the cache key: digest (with external data), I/O, metadata, attention count."""

from __future__ import annotations

import pytest

from cellvit_trt.engine.onnx_model import inspect_onnx, onnx_digest
from cellvit_trt.errors import InputError


def test_reads_io_metadata_and_opset(tmp_path, make_cast_graph):
    meta = {"model": "tiny", "tile_size": 32, "precision": "fp16"}
    info = inspect_onnx(make_cast_graph(tmp_path / "m.onnx", metadata=meta, opset=18))
    assert info.metadata == meta
    assert info.opset == 18
    assert [t.as_dict() for t in info.inputs] == [
        {"name": "image", "dtype": "uint8", "shape": ["N", 32, 32, 3]}
    ]
    assert info.outputs[0].dtype == "float32"
    assert info.attention_blocks == 0


def test_counts_attention_blocks_not_other_softmaxes(tmp_path, make_attention_graph):
    assert inspect_onnx(make_attention_graph(tmp_path / "a.onnx", blocks=3)).attention_blocks == 3


def test_digest_covers_external_weights(tmp_path, make_attention_graph):
    path = make_attention_graph(tmp_path / "ext.onnx", external=True)
    info = inspect_onnx(path)
    assert info.external_data == ("ext.onnx.data",)
    before = info.sha256
    data = tmp_path / "ext.onnx.data"
    raw = bytearray(data.read_bytes())
    raw[0] ^= 0xFF  # same graph file, different weights
    data.write_bytes(bytes(raw))
    assert inspect_onnx(path).sha256 != before
    data.unlink()
    with pytest.raises(InputError, match="external data file .*ext.onnx.data is missing"):
        onnx_digest(path, ["ext.onnx.data"])


def test_bad_files_name_the_file(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        inspect_onnx(tmp_path / "none.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07\x12\xff\xff garbage")
    with pytest.raises(InputError, match="junk.onnx"):
        inspect_onnx(junk)


def test_bad_metadata_json_is_an_input_error(tmp_path, make_cast_graph):
    import onnx

    path = make_cast_graph(tmp_path / "m.onnx")
    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {"cellvit_trt": "{not json"})
    onnx.save(model, str(path))
    with pytest.raises(InputError, match="metadata_props\\['cellvit_trt'\\] is not valid JSON"):
        inspect_onnx(path)
