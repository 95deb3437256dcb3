"""Metadata round trip: export -> metadata_props -> read_graph_metadata / `cellvit-trt info`."""

from __future__ import annotations

import json

import onnx
import pytest
from tests.export.conftest import TILE

from cellvit_trt.cli import main
from cellvit_trt.errors import InputError
from cellvit_trt.export.metadata import read_graph_metadata
from cellvit_trt.io import sha256_file

REQUIRED = (
    "model",
    "variant",
    "class_names",
    "class_colors",
    "tissue_names",
    "tile_size",
    "overlap",
    "target_mpp",
    "magnification",
    "normalization",
    "checkpoint_sha256",
    "precision",
    "package_version",
)


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_metadata_round_trip(exported, tiny, precision):
    result, _ = exported[precision]
    meta = read_graph_metadata(result.path)
    assert meta == result.metadata
    for key in REQUIRED:
        assert key in meta, key
    _, info, ckpt = tiny
    assert meta["checkpoint_sha256"] == sha256_file(ckpt) == info.sha256
    assert meta["precision"] == precision and meta["tile_size"] == TILE and meta["model"] == "tiny"
    assert meta["class_names"] == list(info.nuclei_names) and len(meta["class_colors"]) == len(
        meta["class_names"]
    )
    assert meta["normalization"]["mean"] == list(info.mean)
    props = {p.key for p in onnx.load(str(result.path), load_external_data=False).metadata_props}
    assert props == {"cellvit_trt"}


def test_info_command_reads_graph_and_checkpoint(exported, tiny, capsys):
    path = exported["fp16"][0].path
    assert main(["info", str(path), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["kind"] == "onnx" and shown["metadata"] == read_graph_metadata(path)
    assert shown["inputs"]["image"].startswith("uint8")
    assert main(["info", str(tiny[2])]) == 0
    text = capsys.readouterr().out
    assert "checkpoint" in text and "tiny" in text


def test_info_errors(tmp_path, capsys):
    assert main(["info", str(tmp_path / "missing.onnx")]) == 1
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(InputError):
        read_graph_metadata(bad)
    plain = tmp_path / "plain.onnx"
    onnx.save(onnx.helper.make_model(onnx.helper.make_graph([], "g", [], [])), str(plain))
    with pytest.raises(InputError, match="cellvit-trt export"):
        read_graph_metadata(plain)


def test_cli_export_with_yaml_and_external_data(tiny, tmp_path, capsys):
    """The CLI path (YAML `export:` section + flags), weights in an external data file, gate off."""
    cfg = tmp_path / "export.yaml"
    cfg.write_text(
        f"export:\n  precision: fp16\n  tile_size: {TILE}\n  external_data: always\n  tokens: true\n"
    )
    out = tmp_path / "ext.onnx"
    assert (
        main(
            ["export", str(tiny[2]), "-o", str(out), "--config", str(cfg), "--precision", "fp32", "--no-gate"]
        )
        == 0
    )
    assert "parity gate: skipped" in capsys.readouterr().out
    assert out.is_file() and (tmp_path / "ext.onnx.data").is_file()
    meta = read_graph_metadata(out)
    assert meta["precision"] == "fp32" and meta["tokens"] is True and "tokens" in meta["outputs"]
    from tests.export.conftest import ort_run

    from cellvit_trt.export.samples import gate_tiles

    res = ort_run(out, gate_tiles(1, TILE))
    assert res["tokens"].dtype.name == "float16"
    assert res["tokens"].shape == (1, tiny[1].embed_dim, TILE // 16, TILE // 16)
