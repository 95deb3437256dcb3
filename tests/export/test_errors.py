"""Bad input gets a clear typed error, and a failed export leaves no partial .onnx behind."""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np
import pytest
from tests.export.conftest import TILE

from cellvit_trt.config import resolve
from cellvit_trt.errors import CheckpointError, ConfigError, GateError, InputError
from cellvit_trt.export import ExportSettings, export


def test_not_a_checkpoint(tmp_path):
    bad = tmp_path / "notes.pth"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="notes.pth"):
        export(ExportSettings(checkpoint=bad, output=tmp_path / "x.onnx", tile_size=TILE))
    assert not (tmp_path / "x.onnx").exists()


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        export(ExportSettings(checkpoint=tmp_path / "nope.pth", output=tmp_path / "x.onnx"))


@pytest.mark.parametrize("tile", [250, 0, -16, 1000])
def test_tile_size_must_be_a_multiple_of_16(tile):
    with pytest.raises(ConfigError, match="multiple of 16"):
        resolve(ExportSettings, {"tile_size": tile})


def test_yaml_section_and_flags(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("export:\n  precision: fp32\n  tile_size: 512\n  tokens: true\n")
    args = argparse.Namespace(config=cfg, tile_size=256, precision=None, tokens=None)
    s = resolve(ExportSettings, args, section="export")
    assert (s.precision, s.tile_size, s.tokens) == ("fp32", 256, True)
    cfg.write_text("export:\n  precison: fp32\n")
    with pytest.raises(ConfigError, match="precison"):
        resolve(ExportSettings, argparse.Namespace(config=cfg), section="export")


def test_unwritable_output(tiny, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="cannot write"):
        export(ExportSettings(checkpoint=tiny[2], output=blocker / "sub" / "x.onnx", tile_size=TILE))
    with pytest.raises(InputError, match=".onnx"):
        export(ExportSettings(checkpoint=tiny[2], output=tmp_path / "x.txt", tile_size=TILE))


def test_calibration_folder_without_images(tiny, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    with pytest.raises(InputError, match="no images or slides"):
        export(
            ExportSettings(
                checkpoint=tiny[2],
                output=tmp_path / "x.onnx",
                tile_size=TILE,
                precision="int8",
                calibration=empty,
            )
        )
    with pytest.raises(InputError, match="calibration"):
        export(
            ExportSettings(checkpoint=tiny[2], output=tmp_path / "x.onnx", tile_size=TILE, precision="int8")
        )
    assert not list(tmp_path.glob("*.onnx"))


def test_failed_gate_keeps_only_a_failed_graph(tiny, tmp_path, monkeypatch):
    """A gate failure raises GateError with the report; the target path stays untouched (an older graph there
    survives), the new graph is kept as *.failed.onnx for inspection, no work files remain."""
    from cellvit_trt.export import gate

    strict = gate.Thresholds("fp32", {"fg_agreement": 1.5}, {})  # impossible: forces the failure path
    monkeypatch.setattr(gate, "load_thresholds", lambda precision, path=None: strict)
    target = tmp_path / "model.onnx"
    target.write_bytes(b"previous graph")
    s = ExportSettings(checkpoint=tiny[2], output=target, tile_size=TILE, precision="fp32", gate_tiles=1)
    with pytest.raises(GateError, match="fg_agreement") as err:
        export(s)
    assert "parity gate" in str(err.value) and "model.failed.onnx" in str(err.value)
    assert target.read_bytes() == b"previous graph"
    assert (tmp_path / "model.failed.onnx").is_file()
    assert (tmp_path / "model.failed.export.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    with pytest.raises(GateError):
        export(replace(s, keep_failed=False, output=tmp_path / "other.onnx"))
    assert not (tmp_path / "other.onnx").exists() and not (tmp_path / "other.failed.onnx").exists()


def test_gate_rejects_bad_tiles():
    from cellvit_trt.export.gate import run_gate

    with pytest.raises(InputError, match="uint8"):
        run_gate(lambda x: {}, lambda x: {}, np.zeros((1, 8, 8, 3), np.float32), "fp32")
    with pytest.raises(ConfigError, match="bf16"):
        from cellvit_trt.export.gate import load_thresholds

        load_thresholds("bf16")


def test_calibration_plan_from_a_slide(tmp_path):
    """Tissue tiles from a pyramidal synthetic slide (35 % glass), seeded, read lazily at the tile size."""
    from cellvit_trt.export.calibration import plan_calibration
    from cellvit_trt.synthetic import write_synthetic_slide

    truth = write_synthetic_slide(
        tmp_path / "s.svs", 1400, 1000, compression="deflate", write_labels=False, seed=3
    )
    plan = plan_calibration(truth.slide, 5, TILE, seed=1)
    again = plan_calibration(truth.slide, 5, TILE, seed=1)
    assert len(plan) == 5 and [(p.row, p.col) for p in plan.picks] == [(p.row, p.col) for p in again.picks]
    tiles = plan.read(0, len(plan))
    assert tiles.dtype == np.uint8 and tiles.shape == (5, TILE, TILE, 3)
    assert (tiles.reshape(5, -1).mean(axis=1) < 235).all()  # tissue, not glass
    with pytest.raises(InputError, match="no such file"):
        plan_calibration(tmp_path / "missing.svs", 5, TILE)


def test_tile_larger_than_a_sam_pos_embed(tmp_path):
    import torch

    from cellvit_trt.models import EncoderSpec, build_model, custom_spec, make_info

    enc = EncoderSpec(
        "sam", 32, 4, 2, (1, 2, 3, 4), img_size=128, global_attn_indexes=(3,), window_size=4, out_chans=16
    )
    spec = custom_spec("samsmall", enc)
    torch.manual_seed(0)
    model = build_model(spec).eval()
    with pytest.raises(InputError, match="tile size 256.*pos-embed"):
        export(ExportSettings(output=tmp_path / "x.onnx", tile_size=256), model, make_info(spec))
    assert not list(tmp_path.iterdir())


def _tiny_graph(nodes, extra_inits=()):
    import onnx
    from onnx import TensorProto, helper

    image = helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", 16, 16, 3])
    out = helper.make_tensor_value_info("fg", TensorProto.UINT8, ["N", 16, 16])
    graph = helper.make_graph(nodes, "g", [image], [out], initializer=list(extra_inits))
    return onnx.helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_hygiene_rejects_resize_and_float_shape_math():
    from onnx import TensorProto, helper, numpy_helper

    from cellvit_trt.export.graph_passes import GraphHygieneError, check_hygiene

    ok = _tiny_graph([helper.make_node("ReduceMax", ["image"], ["fg"], axes=[3], keepdims=0)])
    assert check_hygiene(ok, 16)["shape_ops"] == 0
    scales = numpy_helper.from_array(np.ones(4, np.float32), "scales")
    resize = _tiny_graph(
        [
            helper.make_node("Resize", ["image", "", "scales"], ["r"]),
            helper.make_node("ReduceMax", ["r"], ["fg"], axes=[3], keepdims=0),
        ],
        [scales],
    )
    with pytest.raises(GraphHygieneError, match="Resize"):
        check_hygiene(resize, 16)
    half = numpy_helper.from_array(np.array([0.5], np.float32), "half")
    shape_math = _tiny_graph(
        [
            helper.make_node("Shape", ["image"], ["s"]),
            helper.make_node("Cast", ["s"], ["sf"], to=TensorProto.FLOAT, name="scale_cast"),
            helper.make_node("Mul", ["sf", "half"], ["sh"]),
            helper.make_node("Floor", ["sh"], ["sfl"]),
            helper.make_node("Cast", ["sfl"], ["si"], to=TensorProto.INT64),
            helper.make_node("Reshape", ["image", "si"], ["r"]),
            helper.make_node("ReduceMax", ["r"], ["fg"], axes=[3], keepdims=0),
        ],
        [half],
    )
    with pytest.raises(GraphHygieneError, match="floating point.*scale_cast"):
        check_hygiene(shape_math, 16)
    with pytest.raises(GraphHygieneError, match=r"\[N, 32, 32, 3\]"):
        check_hygiene(ok, 32)
