"""Hostile and unusual pixels (issue 16, items 7 and 10): every image layout converted where the mapping to
RGB is defined and refused where it is not; a run that finds no tissue says so; decoded pixels are bounded per
image (`--max-pixels` before any decode, Pillow's bomb guard at the same limit, `--max-slide-pixels`), and a
huge sparse TIFF without a pyramid gets a bounded, sampled thumbnail.

Files are built here with Pillow, tifffile and by hand (a 1.2 MB TIFF declaring 200000² pixels); readers are
the real ones (Pillow, tifffile, OpenSlide, tiffslide).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from test_batch import png_header_only, run
from test_e2e import colour_graph

from cellvit_trt.errors import InputError
from cellvit_trt.runtime.sources import open_source
from cellvit_trt.runtime.sources.pixels import GRAY_NOTE


def sparse_tiff(path: Path, side: int = 200_000, tile: int = 512) -> Path:
    """A classic TIFF declaring side x side RGB pixels (0.25 µm) in tile x tile tiles, none stored: the
    offsets and byte counts are all 0. 200000² in 512² tiles is a 1.2 MB file."""
    n = (-(-side // tile)) ** 2
    entries = [  # (tag, type, count, value; None: the value lives after the IFD)
        (256, 4, 1, side),
        (257, 4, 1, side),
        (258, 3, 3, None),
        (259, 3, 1, 1),
        (262, 3, 1, 2),
        (277, 3, 1, 3),
        (282, 5, 1, None),
        (283, 5, 1, None),
        (284, 3, 1, 1),
        (296, 3, 1, 3),
        (322, 3, 1, tile),
        (323, 3, 1, tile),
        (324, 4, n, None),
        (325, 4, n, None),
    ]
    data_at = 8 + 2 + 12 * len(entries) + 4
    body, extra = bytearray(struct.pack("<2sHIH", b"II", 42, 8, len(entries))), b""
    for tag, typ, count, value in entries:
        if value is None:
            field = struct.pack("<I", data_at + len(extra))
            if tag == 258:
                extra += struct.pack("<3H", 8, 8, 8) + b"\0\0"
            elif tag in (282, 283):
                extra += struct.pack("<2I", 40000, 1)  # px per cm: 0.25 µm
            else:
                extra += b"\0" * (4 * count)
        else:
            field = struct.pack("<HH", value, 0) if typ == 3 else struct.pack("<I", value)
        body += struct.pack("<HHI", tag, typ, count) + field
    path.write_bytes(bytes(body) + struct.pack("<I", 0) + extra)
    return path


def tile0(path: Path) -> tuple[np.ndarray, list[str]]:
    with open_source(path, mpp=0.25, tile_size=256, overlap=0) as src:
        return src.read_tile(0, 0).image, list(src.warnings)


# ---- item 7: layouts --------------------------------------------------------------------------------
def test_gray_16bit_palette_alpha_and_cmyk_are_converted_exactly(tmp_path):
    ramp = np.tile(np.arange(256, dtype=np.uint8), (64, 1))  # 64 x 256
    Image.fromarray(ramp, "L").save(tmp_path / "gray.png")
    img, notes = tile0(tmp_path / "gray.png")
    assert (img[:64, :256] == ramp[..., None]).all() and any(GRAY_NOTE in n for n in notes), notes

    Image.fromarray(ramp.astype(np.uint16) * 257).save(tmp_path / "gray16.png")  # full 16-bit range
    img, notes = tile0(tmp_path / "gray16.png")
    assert (img[:64, :256] == ramp[..., None]).all()

    twelve = (ramp.astype(np.uint16) * 4095 // 255).astype(np.uint16)  # 12-bit camera data in 16-bit samples
    tifffile.imwrite(tmp_path / "gray12.tif", twelve, extratags=[(281, "H", 1, 4095, False)])
    img, notes = tile0(tmp_path / "gray12.tif")
    expected = (twelve.astype(np.uint32) * 255 + 2047) // 4095
    assert (img[:64, :256, 0] == expected).all(), "12-bit data scaled by its MaxSampleValue, not by 65535"

    rgb16 = np.stack(
        [ramp.astype(np.uint16) * 257, np.zeros_like(ramp, np.uint16), np.full_like(ramp, 65535, np.uint16)],
        -1,
    )
    tifffile.imwrite(tmp_path / "rgb16.tif", rgb16, photometric="rgb")
    img, _ = tile0(tmp_path / "rgb16.tif")
    assert (
        (img[:64, :256, 0] == ramp).all()
        and (img[:64, :256, 1] == 0).all()
        and (img[:64, :256, 2] == 255).all()
    )

    pal = Image.fromarray((ramp // 64).astype(np.uint8), "P")
    pal.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30] + [0] * (768 - 12))
    pal.save(tmp_path / "palette.png")
    img, _ = tile0(tmp_path / "palette.png")
    assert tuple(img[0, 0]) == (255, 0, 0) and tuple(img[0, 255]) == (10, 20, 30)

    rgba = np.zeros((64, 256, 4), np.uint8)
    rgba[..., 0], rgba[:, 128:, 3] = 200, 255  # left half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    img, _ = tile0(tmp_path / "rgba.png")
    assert tuple(img[0, 0]) == (255, 255, 255) and tuple(img[0, 200]) == (200, 0, 0)

    cmyk = np.zeros((64, 256, 4), np.uint8)
    cmyk[..., 0], cmyk[..., 3] = 255, 51  # full cyan, 20 % black
    tifffile.imwrite(tmp_path / "cmyk.tif", cmyk, photometric="separated")
    img, notes = tile0(tmp_path / "cmyk.tif")
    assert tuple(img[0, 0]) == (0, 204, 204) and any("CMYK" in n for n in notes), (img[0, 0], notes)


def test_layouts_without_a_defined_rgb_mapping_are_refused(tmp_path):
    tifffile.imwrite(
        tmp_path / "float.tif", np.random.default_rng(0).random((64, 64, 3), np.float32), photometric="rgb"
    )
    with pytest.raises(InputError, match=r"float.tif: float32 samples have no defined mapping"):
        tile0(tmp_path / "float.tif")
    seven = np.zeros((64, 64, 7), np.uint8)  # a multiplexed (7-channel) image in one page
    tifffile.imwrite(tmp_path / "multiplex.tif", seven, photometric="minisblack", planarconfig="contig")
    with pytest.raises(InputError, match="multiplex.tif"):
        tile0(tmp_path / "multiplex.tif")


def test_a_grayscale_run_and_a_blank_run_warn(tmp_path, capsys):
    from cellvit_trt.synthetic.tile import generate_tile

    model = colour_graph(tmp_path / "colour.onnx")
    he = generate_tile((300, 420), seed=3, glass_fraction=0.0).image
    Image.fromarray(he).convert("L").save(tmp_path / "gray.png")
    Image.fromarray(np.full((300, 420, 3), 245, np.uint8)).save(tmp_path / "blank.png")
    out = tmp_path / "out"
    assert run(model, out, tmp_path / "gray.png", tmp_path / "blank.png") == 0
    err = capsys.readouterr().err
    assert "grayscale" in err and err.count("no tissue found") == 2, err
    gray = json.loads((out / "gray" / "summary.json").read_text())["warnings"]
    blank = json.loads((out / "blank" / "summary.json").read_text())["warnings"]
    assert any(GRAY_NOTE in w for w in gray) and any("no tissue found" in w for w in gray), gray
    assert len(blank) == 1 and "blank.png: no tissue found (0 of 6 tiles" in blank[0], blank
    entries = json.loads((out / "run.json").read_text())["inputs"]
    assert [len(e["warnings"]) for e in entries] == [2, 1]


# ---- item 10: bounded pixels ------------------------------------------------------------------------
def test_images_declaring_too_many_pixels_are_refused_before_decoding(tmp_path):
    bomb = png_header_only(tmp_path / "bomb.png", 30_000, 30_000)  # 9e8 pixels: 2.7 GB once decoded
    with pytest.raises(InputError, match=r"bomb.png: the image declares .*--max-pixels 268435456.*900000000"):
        tile0(bomb)
    guard = Image.MAX_IMAGE_PIXELS
    small = png_header_only(tmp_path / "small.png", 40, 30)  # 1200 pixels: over a limit of 1000
    with pytest.raises(
        InputError, match=r"small.png: the image declares 40x30 = 1200 pixels, more than --max-pixels 1000"
    ):
        with open_source(small, mpp=0.25, max_pixels=1000):
            pass
    # Pillow's guard is process-wide: a small run limit must not leak to other Pillow users (serve's tiles)
    assert Image.MAX_IMAGE_PIXELS == guard >= 268435456, "raised to the default limit, never lowered"
    Image.fromarray(np.zeros((2000, 2000, 3), np.uint8)).save(tmp_path / "big.jpg")
    with Image.open(tmp_path / "big.jpg") as im:
        assert im.size == (2000, 2000)
    with pytest.raises(InputError, match=r"more than --max-slide-pixels 1000000000"):
        open_source(sparse_tiff(tmp_path / "sparse.tif"), reader="tiffslide", max_slide_pixels=10**9)


def test_a_sparse_tiff_declaring_200000_squared_gets_a_bounded_thumbnail(tmp_path):
    path = sparse_tiff(tmp_path / "sparse.tif")
    assert path.stat().st_size < 1_300_000
    with pytest.raises(InputError, match="stores no image data"):  # OpenSlide: no stored tile at all
        open_source(path, reader="openslide")
    budget = 4096 * 64 * 64  # THUMB_WINDOWS windows of THUMB_WINDOW² px
    with open_source(path, reader="tiffslide") as src:
        read = src._slide.read_region
        asked = []

        def counted(loc, level, size):
            asked.append(size[0] * size[1])
            if sum(asked) > 4 * budget:
                raise AssertionError(f"the thumbnail reads {sum(asked)} px and counting: not bounded")
            return read(loc, level, size)

        src._slide.read_region = counted
        thumb, factor = src.thumbnail(2048)
    assert thumb.shape == (2048, 2048, 3) and factor == pytest.approx(200_000 / 2048)
    assert sum(asked) <= budget and len(asked) <= 4096, (sum(asked), len(asked))
    assert any("sampled from" in w for w in src.warnings), src.warnings


# ---- item 8: corrupt compressed tiles ----------------------------------------------------------------------
def damaged_slide(path: Path, tile_index: int = 1) -> Path:
    """A synthetic Aperio slide (JPEG tiles of 256²) with the second half of one tile's bytes zeroed (a
    damaged copy): the headers are intact and the decoder fills what is missing, so only libjpeg's
    corrupt-data warnings can tell."""
    from cellvit_trt.synthetic import write_synthetic_slide

    write_synthetic_slide(
        path, 512, 512, seed=8, tile_size=256, downsamples=(1,), write_labels=False, glass_fraction=0.0
    )
    with tifffile.TiffFile(path) as tf:
        at, n = int(tf.pages[0].dataoffsets[tile_index]), int(tf.pages[0].databytecounts[tile_index])
    data = bytearray(path.read_bytes())
    data[at + n // 2 : at + n] = bytes(n - n // 2)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("reader", ["openslide", "tiffslide"])
def test_corrupt_tile_bytes_are_reported_by_both_readers_and_fail_only_their_tile(tmp_path, reader):
    path = damaged_slide(tmp_path / "damaged.svs")
    outcome = {}
    with open_source(path, reader=reader, tile_size=256, overlap=0) as src:
        for r, c in src.grid.tiles():
            try:
                src.read_tile(r, c)
                outcome[(r, c)] = "ok"
            except InputError as exc:
                outcome[(r, c)] = str(exc)
    failed = {rc: m for rc, m in outcome.items() if m != "ok"}
    assert list(failed) == [(0, 1)], outcome  # TIFF tile 1 only; the reader goes on after it
    assert "damaged.svs" in failed[(0, 1)] and "JPEG" in failed[(0, 1)], failed


def test_a_run_counts_tiles_that_decode_with_errors_and_fails_past_the_limit(tmp_path, capsys):
    model = colour_graph(tmp_path / "colour.onnx")
    path = damaged_slide(tmp_path / "damaged.svs")
    out = tmp_path / "out"
    common = ["--no-tissue", "--reader", "tiffslide"]
    assert run(model, out, path, extra=[*common, "--max-bad-tiles", "0.5"]) == 0
    summary = json.loads((out / "damaged" / "summary.json").read_text())
    n = summary["tiles_decode_errors"]
    assert 1 <= n <= 4 and summary["tiles_processed"] == summary["tiles_planned"] - n, summary
    assert all("JPEG" in e["error"] for e in summary["decode_errors"])
    assert any("could not be decoded and were left out" in w for w in summary["warnings"])
    entry = json.loads((out / "run.json").read_text())["inputs"][0]
    assert entry["tiles_decode_errors"] == n and entry["status"] == "ok"
    assert "could not be decoded" in capsys.readouterr().err
    assert run(model, tmp_path / "strict", path, extra=common) == 1  # default --max-bad-tiles 0.01
    error = json.loads((tmp_path / "strict" / "run.json").read_text())["inputs"][0]["error"]
    assert f"{n} of 9 tiles could not be decoded, more than --max-bad-tiles 0.01" in error
    assert "tile (row" in error and "JPEG" in error, error
