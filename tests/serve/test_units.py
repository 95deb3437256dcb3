"""The service's small parts: slide ids that cannot escape the output folder, tile checks before decoding,
the committed stubs, and a core that never imports grpc."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from tests.serve.conftest import ROOT

from cellvit_trt.errors import InputError
from cellvit_trt.serve.errors import SlideError
from cellvit_trt.serve.outputs import Staging, folder_name
from cellvit_trt.serve.tiles import Layout, decode_tile
from cellvit_trt.serve.v1 import scanner_pb2 as pb


@pytest.mark.parametrize(
    "slide_id",
    ["..", "../x", "/etc/passwd", "a/../../b", ".hidden", "a\\b", "C:\\x", "é/ü", " ", "...", "a" * 150],
)
def test_no_slide_id_escapes_the_output_folder(tmp_path, slide_id):
    if not slide_id.strip():
        with pytest.raises(InputError):
            folder_name(slide_id)
        return
    name = folder_name(slide_id)
    assert name and "/" not in name and "\\" not in name and not name.startswith(".") and len(name) <= 140
    stage = Staging(tmp_path, name)
    (stage.path / "cells.json").write_text("{}")
    final = stage.commit(overwrite=False)
    assert final.parent == tmp_path and (final / "cells.json").is_file()


def test_different_ids_never_share_a_folder():
    ids = ["a/b", "a_b", "a b", "a:b", "a?b", "A_B", "slide-1", "slide_1"]
    names = [folder_name(i) for i in ids]
    assert len(set(names)) == len(ids) and folder_name("slide-1") == "slide-1"


def test_a_finished_result_is_replaced_only_when_asked(tmp_path):
    first = Staging(tmp_path, "s")
    (first.path / "v").write_text("1")
    first.commit(overwrite=False)
    second = Staging(tmp_path, "s")
    (second.path / "v").write_text("2")
    with pytest.raises(FileExistsError):
        second.commit(overwrite=False)
    second.commit(overwrite=True)
    assert (tmp_path / "s" / "v").read_text() == "2" and sorted(p.name for p in tmp_path.iterdir()) == ["s"]


@pytest.mark.parametrize("side, words", [(2000, "the JPEG is 2000x2000 px, declared 16x16"), (30000, "bomb")])
def test_a_jpeg_bomb_is_refused_from_its_header(side, words):
    """A small message whose JPEG header claims a large image: refused before any pixel is decoded."""
    import cv2

    jpeg = bytearray(cv2.imencode(".jpg", np.zeros((16, 16, 3), np.uint8))[1].tobytes())
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5 : sof + 9] = side.to_bytes(2, "big") * 2  # height, width in the SOF0 header
    tile = pb.Tile(x=0, y=0, width=16, height=16, jpeg=bytes(jpeg))
    with pytest.raises(SlideError, match=words) as refused:
        decode_tile(tile, 100, 100, Layout(), 4096 * 4096)
    assert refused.value.code == "INVALID_ARGUMENT"


def test_layout_rules():
    rgb = np.zeros((100, 60, 3), np.uint8).tobytes()
    lay = Layout.from_message(pb.TileLayout(tile_width=100, tile_height=100), 10**6)
    edge = pb.Tile(x=200, y=0, width=60, height=100, rgb=rgb)  # cut by the slide's right edge
    assert decode_tile(edge, 260, 300, lay, 10**6).shape == (100, 60, 3)
    with pytest.raises(SlideError, match="not on the declared lattice"):
        decode_tile(pb.Tile(x=50, y=0, width=60, height=100, rgb=rgb), 260, 300, lay, 10**6)
    with pytest.raises(SlideError, match="stride 200x100 larger than the tile"):
        Layout.from_message(pb.TileLayout(tile_width=100, tile_height=100, stride_x=200), 10**6)


def test_committed_stubs_are_what_the_pinned_generator_makes(tmp_path):
    from cellvit_trt.serve.protogen import FILES, PACKAGE_DIR, generate

    generate(tmp_path)
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (PACKAGE_DIR / name).read_bytes(), (
            f"{name} is stale: run `python -m cellvit_trt.serve.protogen` after editing the .proto"
        )


def test_the_core_and_serve_help_never_import_grpc():
    code = (
        "import sys, contextlib, io\n"
        "import cellvit_trt, cellvit_trt.serve, cellvit_trt.serve.settings\n"
        "from cellvit_trt.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main(['serve', '--help'])\n"
        "print('grpc' in sys.modules, 'google.protobuf' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.stdout.split() == ["False", "False"], out.stderr
