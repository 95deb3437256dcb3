"""Synthetic pyramidal slides: OpenSlide and tiffslide read them, report the mpp, show what was rendered."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from cellvit_trt.errors import InputError
from cellvit_trt.synthetic.render import render_window
from cellvit_trt.synthetic.slide import load_slide_cells, write_synthetic_slide
from cellvit_trt.synthetic.world import World

W, H = 1100, 900


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    path = tmp_path_factory.mktemp("slide") / "synthetic.svs"
    truth = write_synthetic_slide(
        path, W, H, mpp=0.25, seed=3, tile_size=256, compression="deflate", block=512, tissue_scale_um=100.0
    )
    return truth


def _readers():
    import openslide
    import tiffslide

    return [("openslide", openslide.OpenSlide), ("tiffslide", tiffslide.TiffSlide)]


@pytest.mark.parametrize("name", ["openslide", "tiffslide"])
def test_readers_see_levels_and_mpp(slide, name):
    cls = dict(_readers())[name]
    s = cls(str(slide.slide))
    try:
        assert s.level_count == 3
        assert tuple(s.level_dimensions) == ((W, H), (W // 2, H // 2), (W // 4, H // 4))
        np.testing.assert_allclose(s.level_downsamples, (1.0, 2.0, 4.0))
        props = s.properties
        assert float(props[f"{name}.mpp-x"]) == pytest.approx(0.25)
        assert float(props[f"{name}.mpp-y"]) == pytest.approx(0.25)
        assert float(props[f"{name}.objective-power"]) == pytest.approx(40)
        assert "thumbnail" in s.associated_images
    finally:
        s.close()


def test_level0_pixels_are_the_rendered_ones(slide):
    world = World(seed=3, mpp=0.25, preset="mixed", glass_fraction=0.35, tissue_scale_um=100.0)
    y, x, h, w = 430, 470, 300, 380  # crosses the 512-px render blocks and 256-px TIFF tiles
    expected = render_window(world, y, x, h, w).image
    for name, cls in _readers():
        s = cls(str(slide.slide))
        got = np.asarray(s.read_region((x, y), 0, (w, h)))[..., :3]
        s.close()
        np.testing.assert_array_equal(got, expected, err_msg=name)
    lvl1 = np.asarray(tifffile.imread(slide.slide, key=2))
    full = tifffile.imread(slide.slide, key=0)
    np.testing.assert_allclose(
        lvl1[100:110, 100:110].astype(float),
        full[200:220, 200:220].reshape(10, 2, 10, 2, 3).mean((1, 3)),
        atol=1.0,
    )


def test_ground_truth_beside_the_slide(slide):
    cells, meta = load_slide_cells(slide.slide)
    labels = tifffile.imread(slide.labels_path)
    assert meta == {"width": W, "height": H, "mpp": 0.25, "seed": 3}
    assert labels.shape == (H, W) and labels.dtype == np.int32
    assert len(cells) == slide.n_cells > 50
    area = np.bincount(labels.ravel(), minlength=int(cells.id.max()) + 1)
    np.testing.assert_array_equal(area[cells.id], cells.area)
    assert set(np.unique(labels)) == {0, *cells.id.tolist()}
    i = int(np.argmax(cells.area))
    ys, xs = np.nonzero(labels == cells.id[i])
    np.testing.assert_allclose(cells.centroid[i], (xs.mean(), ys.mean()))
    assert tuple(cells.bbox[i]) == (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1)
    assert set(np.unique(cells.type)) <= {1, 2, 3, 4, 5}
    # glass exists and holds no cells
    img = tifffile.imread(slide.slide, key=0)
    glass = img.min(axis=2) > 215
    assert 0.05 < glass.mean() < 0.9
    assert (labels[glass] > 0).mean() < 0.01


def test_jpeg_slide_opens_with_mpp(tmp_path):
    import openslide
    import tiffslide

    p = tmp_path / "j.svs"
    write_synthetic_slide(p, 600, 520, mpp=0.5, seed=1, tile_size=128, compression="jpeg", write_labels=False)
    for cls, key in ((openslide.OpenSlide, "openslide.mpp-x"), (tiffslide.TiffSlide, "tiffslide.mpp-x")):
        s = cls(str(p))
        assert float(s.properties[key]) == pytest.approx(0.5)
        assert s.level_dimensions[0] == (600, 520)
        s.close()


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(InputError, match="tile_size"):
        write_synthetic_slide(tmp_path / "a.svs", 512, 512, tile_size=100)
    with pytest.raises(InputError, match="downsamples"):
        write_synthetic_slide(tmp_path / "a.svs", 512, 512, downsamples=(2, 4))
    with pytest.raises(InputError, match="compression"):
        write_synthetic_slide(tmp_path / "a.svs", 512, 512, compression="lzma")
    assert not (tmp_path / "a.svs").exists()
