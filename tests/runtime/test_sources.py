"""Sources on real files: pyramidal TIFF via OpenSlide and tiffslide, images, folders, arrays, push API."""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest
import tifffile

from cellvit_trt.errors import InputError
from cellvit_trt.runtime.sources import ArraySource, PushSource, expand_inputs, open_source
from cellvit_trt.runtime.sources.resolution import choose_level
from cellvit_trt.runtime.tiling import TileGrid, cut_tile


def _texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth random RGB (so that resampling is well defined), seeded."""
    rng = np.random.default_rng(seed)
    small = rng.integers(60, 230, (h // 16 + 2, w // 16 + 2, 3), dtype=np.uint8)
    return cv2.resize(small, (w + 32, h + 32), interpolation=cv2.INTER_CUBIC)[16 : 16 + h, 16 : 16 + w].copy()


def _write_pyramid(path, image, mpp, downsamples=(1, 4), subifds=False, tile=256, compression="zlib"):
    """A tiled pyramidal TIFF: levels as separate IFDs (OpenSlide generic-tiff) or SubIFDs (tiffslide)."""
    levels = [
        image
        if d == 1
        else cv2.resize(image, (image.shape[1] // d, image.shape[0] // d), interpolation=cv2.INTER_AREA)
        for d in downsamples
    ]
    res = dict(resolution=(1e4 / mpp, 1e4 / mpp), resolutionunit="CENTIMETER") if mpp else {}
    with tifffile.TiffWriter(path, bigtiff=False) as tw:
        opts = dict(tile=(tile, tile), photometric="rgb", compression=compression)
        if subifds:
            tw.write(levels[0], subifds=len(levels) - 1, **opts, **res)
            for lv in levels[1:]:
                tw.write(lv, subfiletype=1, **opts)
        else:
            for i, lv in enumerate(levels):
                r = (
                    dict(
                        resolution=(1e4 / mpp / downsamples[i], 1e4 / mpp / downsamples[i]),
                        resolutionunit="CENTIMETER",
                    )
                    if mpp
                    else {}
                )
                tw.write(lv, subfiletype=0 if i == 0 else 1, **opts, **r)
    return levels


@pytest.fixture(scope="module")
def slide_image():
    return _texture(1500, 2300)


@pytest.mark.parametrize("reader,subifds", [("openslide", False), ("tiffslide", False), ("tiffslide", True)])
def test_slide_tiles_equal_the_pixels(tmp_path, slide_image, reader, subifds):
    path = tmp_path / "slide.tif"
    _write_pyramid(path, slide_image, 0.25, subifds=subifds)
    with open_source(path, target_mpp=0.25, reader=reader) as src:
        assert src.info.reader == reader and src.info.scale == 1.0 and src.info.mpp == pytest.approx(0.25)
        assert (src.info.height, src.info.width) == slide_image.shape[:2]
        assert (src.grid.rows, src.grid.cols) == (2, 3)
        for row, col in [(0, 0), (1, 2), (0, 2)]:
            tile = src.read_tile(row, col)
            assert tile.image.dtype == np.uint8 and tile.image.shape == (1024, 1024, 3)
            np.testing.assert_array_equal(tile.image, cut_tile(slide_image, src.grid, row, col))


def test_slide_level_choice_and_resampling(tmp_path, slide_image):
    path = tmp_path / "slide.tif"
    levels = _write_pyramid(path, slide_image, 0.125, downsamples=(1, 2, 8))
    # 0.125 mpp x {1, 2, 8}: level 1 is 0.25 mpp exactly -> no resampling, scale 2
    with open_source(path, target_mpp=0.25, reader="openslide") as src:
        assert (src.info.level, src.info.resample, src.info.scale) == (1, 1.0, 2.0)
        np.testing.assert_array_equal(src.read_region(0, 0, 300, 300), levels[1][:300, :300])
        assert src.info.to_slide([[10, 20]]).tolist() == [[20.0, 40.0]]
    # 0.5 mpp target: level 1 (0.25) resampled by 2 with Lanczos; level 2 (1.0 mpp) is too coarse
    with open_source(path, target_mpp=0.5, reader="tiffslide", tile_size=256, overlap=16) as src:
        assert src.info.level == 1 and src.info.resample == pytest.approx(2.0) and src.info.scale == 4.0
        ref = cv2.resize(
            levels[1], (levels[1].shape[1] // 2, levels[1].shape[0] // 2), interpolation=cv2.INTER_AREA
        )
        got = src.read_region(0, 0, *ref.shape[:2])
        assert np.abs(got.astype(int) - ref).mean() < 3
        # neighbouring tiles see the same global pixels in their overlap
        a, b = src.read_tile(0, 0).image, src.read_tile(0, 1).image
        s = src.grid.stride
        assert np.abs(a[:, s : s + 32].astype(int) - b[:, :32]).max() <= 1


@pytest.mark.parametrize(
    "base,downsamples,target,level,resample",
    [
        (0.25, [1, 4, 16], 0.25, 0, 1.0),
        (0.2208, [1, 4], 0.25, 0, 1.0),  # Hamamatsu x40: within the 0.035 tolerance, read as is
        (0.5, [1, 4], 0.25, 0, 0.5),  # x20 slide for a x40 model: upsampled 2x
        (0.1, [1, 2, 4, 8], 0.25, 1, 1.25),  # coarsest level finer than the target, then resampled
        (0.25, [1, 2, 4], 0.5, 1, 1.0),
        (0.2526, [1, 4, 16], 0.5, 0, 0.5 / 0.2526),
    ],
)
def test_choose_level(base, downsamples, target, level, resample):
    choice = choose_level("s.svs", base, downsamples, target)
    assert choice.level == level and choice.resample == pytest.approx(resample)


def test_too_coarse_and_missing_mpp_are_refused(tmp_path, slide_image):
    with pytest.raises(InputError, match=r"s\.svs.*0\.8000 mpp is too coarse"):
        choose_level("s.svs", 0.8, [1], 0.25)
    path = tmp_path / "no_mpp.tif"
    _write_pyramid(path, slide_image, None, subifds=True)
    with pytest.raises(InputError, match=r"no_mpp\.tif.*no usable resolution.*--mpp"):
        open_source(path)
    with open_source(path, mpp=0.25) as src:
        assert src.info.base_mpp == 0.25


def test_truncated_slide_names_file_and_tile(tmp_path, slide_image):
    path = tmp_path / "cut.tif"
    big = np.concatenate([slide_image] * 2, axis=0)
    # level 0 written last, so that truncation cuts its tile data but keeps every directory readable
    with tifffile.TiffWriter(path) as tw:
        small = cv2.resize(big, (big.shape[1] // 4, big.shape[0] // 4), interpolation=cv2.INTER_AREA)
        tw.write(
            big,
            tile=(256, 256),
            photometric="rgb",
            compression="zlib",
            resolution=(4e4, 4e4),
            resolutionunit="CENTIMETER",
        )
        tw.write(small, tile=(256, 256), photometric="rgb", compression="zlib", subfiletype=1)
    data = path.read_bytes()
    with tifffile.TiffFile(path) as tf:
        page = tf.pages[0]
        cut = page.dataoffsets[len(page.dataoffsets) // 2]
    with open(path, "r+b") as fh:  # zero the second half of level 0's tile data (a damaged download)
        fh.seek(cut)
        fh.write(b"\0" * (page.dataoffsets[-1] + page.databytecounts[-1] - cut))
    assert len(path.read_bytes()) == len(data)
    for reader in ("openslide", "tiffslide"):
        with pytest.raises(InputError) as err, open_source(path, reader=reader) as src:
            for _ in src.tiles():
                pass
        msg = str(err.value)
        assert "cut.tif" in msg and "tile (row" in msg, msg


def test_image_files_rgb_order_and_folder(tmp_path):
    rgb = np.zeros((300, 500, 3), np.uint8)
    rgb[:, :250] = (255, 0, 0)  # red on the left
    rgb[:, 250:] = (0, 0, 255)
    for name in ("b.png", "a.tif", "c.jpg"):
        cv2.imwrite(str(tmp_path / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    (tmp_path / "notes.txt").write_text("not an image")
    files = expand_inputs(tmp_path)
    assert [p.name for p in files] == ["a.tif", "b.png", "c.jpg"]
    for p in files:
        with open_source(p) as src:
            tile = src.read_tile(0, 0).image
            assert src.info.reader in ("opencv", "pillow") and (src.grid.rows, src.grid.cols) == (1, 1)
            assert tuple(tile[100, 100]) == pytest.approx((255, 0, 0), abs=3)  # RGB, not BGR
            assert tuple(tile[100, 400]) == pytest.approx((0, 0, 255), abs=3)
            assert (tile[:32] == 255).all() and (tile[332:] == 255).all()  # white padding
    with pytest.raises(InputError, match="notes.txt"):
        open_source(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no image files"):
        expand_inputs(tmp_path / "empty")


def test_array_source_and_mpp_resampling():
    img = _texture(700, 900)
    with ArraySource(img, mpp=0.25) as src:
        np.testing.assert_array_equal(src.read_tile(0, 0).image, cut_tile(img, src.grid, 0, 0))
    with ArraySource(img, mpp=0.125, target_mpp=0.25) as src:  # x80 pixels for a x40 model
        assert (src.info.height, src.info.width, src.info.scale) == (350, 450, 2.0)
    with pytest.raises(InputError, match="expected a uint8 image"):
        ArraySource(img.astype(np.float32))
    with pytest.raises(InputError, match=r"\[H, W, 3\]"):
        ArraySource(np.zeros((10, 10, 5), np.uint8))


def test_push_api_backpressure_and_pixels():
    img = _texture(2100, 2000, seed=3)
    ref = ArraySource(img)
    src = PushSource(2100, 2000, mpp=0.25, maxsize=2, timeout=20)
    got, sizes = {}, []

    def scanner() -> None:  # strips of 300 rows, each as 4 scanner tiles of 500 columns, in scan order
        for y in range(0, 2100, 300):
            for x in range(0, 2000, 500):
                src.submit(img[y : y + 300, x : x + 500], y, x)
        src.finish()

    t = threading.Thread(target=scanner)
    t.start()
    for tile in src.tiles():
        time.sleep(0.05)  # a slow consumer
        sizes.append(src._tiles.qsize())
        got[(tile.row, tile.col)] = tile
    t.join()
    assert src.max_queued <= 2 and max(sizes) <= 2
    assert sorted(got) == sorted(ref.grid.tiles())
    for (row, col), tile in got.items():
        assert (tile.y0, tile.x0) == ref.grid.origin(row, col)
        np.testing.assert_array_equal(tile.image, ref.read_tile(row, col).image)
    # a consumer that never reads: the producer blocks, then times out instead of buffering without bound
    stuck = PushSource(1024, 1024, maxsize=1, timeout=0.2, tile_size=256, overlap=16)
    with pytest.raises(TimeoutError, match="consumer took no tile"):
        stuck.submit(_texture(300, 1024), 0, 0)
    # results flow back to the scanner
    src.deliver(["cells"])
    src.close_results()
    assert list(src.results(timeout=1)) == [["cells"]]


def test_push_rejects_bad_blocks_and_unbounded_orders():
    src = PushSource(3000, 3000, tile_size=256, overlap=16, max_bands=2, timeout=1)
    with pytest.raises(InputError, match="leaves the 3000x3000 region"):
        src.submit(np.zeros((10, 10, 3), np.uint8), 2995, 0)
    with pytest.raises(InputError, match="uint8"):
        src.submit(np.zeros((10, 10, 3), np.float32), 0, 0)
    with pytest.raises(InputError, match="more than 2 tile rows open"):
        src.submit(np.zeros((1000, 10, 3), np.uint8), 0, 0)  # a column: every tile row at once
    with pytest.raises(InputError, match="does not resample"):
        PushSource(100, 100, mpp=0.5, target_mpp=0.25)


def test_tiling_coordinates_and_round_trip():
    grid = TileGrid(5000, 3000)
    assert (grid.rows, grid.cols, grid.stride, grid.margin) == (6, 4, 960, 64)
    assert grid.origin(0, 0) == (-32, -32) and grid.origin(5, 3) == (5 * 960 - 32, 3 * 960 - 32)
    assert grid.origin(5, 3)[0] + 1024 >= 5000 and grid.origin(5, 3)[1] + 1024 >= 3000
    img = _texture(1234, 2345, seed=5)
    for tile_size, overlap in [(1024, 32), (256, 16), (512, 0)]:
        g = TileGrid(*img.shape[:2], tile_size, overlap)
        tiles = {rc: cut_tile(img, g, *rc) for rc in g.tiles()}
        from cellvit_trt.runtime.tiling import stitch_centres

        np.testing.assert_array_equal(stitch_centres(tiles, g), img)
        for (r, c), t in tiles.items():  # every tile pixel is the region pixel at origin + offset, or white
            y0, x0 = g.origin(r, c)
            yy, xx = np.clip(y0 + 5, 0, None), np.clip(x0 + 7, 0, None)
            if y0 + 5 >= 0 and x0 + 7 >= 0 and yy < img.shape[0] and xx < img.shape[1]:
                assert (t[5, 7] == img[yy, xx]).all()
        # tiles_touching agrees with brute force
        for box in [(0, 0, 1, 1), (900, 950, 1000, 1000), (1200, 2300, 1234, 2345), (-5, -5, 0, 0)]:
            brute = [
                (r, c)
                for r, c in g.tiles()
                if g.origin(r, c)[0] < box[2]
                and g.origin(r, c)[0] + tile_size > box[0]
                and g.origin(r, c)[1] < box[3]
                and g.origin(r, c)[1] + tile_size > box[1]
            ]
            assert g.tiles_touching(*box) == brute


def test_synthetic_aperio_slide_both_readers(tmp_path):
    """The Aperio-style synthetic slide: OpenSlide and tiffslide agree pixel for pixel, mpp from metadata."""
    from cellvit_trt.runtime.tissue import detect_tissue
    from cellvit_trt.synthetic.slide import write_synthetic_slide

    truth = write_synthetic_slide(
        tmp_path / "s.svs", 1400, 1000, compression="deflate", write_labels=False, seed=3
    )
    tiles, plans = {}, {}
    for reader in ("openslide", "tiffslide"):
        with open_source(truth.slide, reader=reader) as src:
            assert src.info.base_mpp == pytest.approx(0.25) and (src.info.height, src.info.width) == (
                1000,
                1400,
            )
            assert src.info.properties[f"{reader}.vendor"] == "aperio"
            tiles[reader] = [t.image for t in src.tiles()]
            plans[reader] = detect_tissue(src).ratio
    for a, b in zip(tiles["openslide"], tiles["tiffslide"], strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(plans["openslide"], plans["tiffslide"])


def test_ome_tiff_pyramid_through_tiffslide(tmp_path, slide_image):
    """OME-TIFF with a SubIFD pyramid: read by tiffslide (OpenSlide's generic-tiff would see level 0 only),
    mpp from the OME-XML PhysicalSizeX in nanometres."""
    path = tmp_path / "x.ome.tif"
    md = {
        "axes": "YXS",
        "PhysicalSizeX": 250.0,
        "PhysicalSizeXUnit": "nm",
        "PhysicalSizeY": 250.0,
        "PhysicalSizeYUnit": "nm",
    }
    small = cv2.resize(
        slide_image, (slide_image.shape[1] // 4, slide_image.shape[0] // 4), interpolation=cv2.INTER_AREA
    )
    with tifffile.TiffWriter(path) as tw:
        tw.write(slide_image, subifds=1, tile=(256, 256), photometric="rgb", compression="zlib", metadata=md)
        tw.write(small, subfiletype=1, tile=(256, 256), photometric="rgb", compression="zlib")
    with open_source(path) as src:
        assert src.info.reader == "tiffslide" and src.info.base_mpp == pytest.approx(0.25)
        np.testing.assert_array_equal(src.read_tile(1, 1).image, cut_tile(slide_image, src.grid, 1, 1))
        thumb, factor = src.thumbnail(256)
        assert max(thumb.shape[:2]) == 256 and factor == pytest.approx(2300 / 256)
