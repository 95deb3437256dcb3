"""Synthetic tiles: determinism, window consistency, exact ground truth and training targets."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi

from cellvit_trt.errors import InputError
from cellvit_trt.synthetic import generate_tile
from cellvit_trt.synthetic.world import TISSUE_NAMES


def test_same_seed_same_arrays_different_seed_different():
    a = generate_tile(128, seed=11)
    b = generate_tile(128, seed=11)
    c = generate_tile(128, seed=12)
    for x, y in ((a.image, b.image), (a.inst_map, b.inst_map), (a.type_map, b.type_map)):
        np.testing.assert_array_equal(x, y)
    assert a.world == b.world and a.tissue == b.tissue
    assert not np.array_equal(a.image, c.image)
    assert a.world.stain != c.world.stain  # stain vectors, strengths and blur are drawn per tile


def test_windows_of_one_virtual_slide_agree():
    """A tile is a window of a virtual slide: an overlapping window shows the same pixels and nuclei."""
    big = generate_tile((192, 160), seed=5, preset="mixed", glass_fraction=0.3)
    small = generate_tile((96, 80), seed=5, preset="mixed", glass_fraction=0.3, origin=(64, 48))
    crop_img = big.image[64:160, 48:128]
    crop_lab = big.inst_map[64:160, 48:128]
    np.testing.assert_array_equal(small.image, crop_img)
    # same partition up to renumbering: a bijection between the label sets
    assert np.array_equal(small.inst_map > 0, crop_lab > 0)
    pairs = np.unique(np.stack([small.inst_map.ravel(), crop_lab.ravel()]), axis=1)
    assert np.unique(pairs[0]).size == pairs.shape[1] == np.unique(pairs[1]).size
    np.testing.assert_array_equal(small.type_map, big.type_map[64:160, 48:128])


def test_ground_truth_is_consistent():
    tile = generate_tile(256, seed=3, preset="mixed")
    inst, tmap, cells = tile.inst_map, tile.type_map, tile.cells
    assert tile.image.dtype == np.uint8 and tile.image.shape == (256, 256, 3)
    assert inst.dtype == np.int32 and tmap.dtype == np.uint8
    n = int(inst.max())
    assert n > 20 and np.array_equal(cells.id, np.arange(1, n + 1))  # ids are exactly 1..N
    np.testing.assert_array_equal(tmap, tile.inst_types[inst])  # every pixel carries its instance's class
    assert set(np.unique(tmap[inst > 0])) <= {1, 2, 3, 4, 5} and not tmap[inst == 0].any()
    np.testing.assert_array_equal(np.bincount(inst.ravel(), minlength=n + 1)[1:], cells.area)
    inner = 0
    for i in range(n):  # every instance is one 4-connected region (the tile border may cut one in two)
        r0, c0, r1, c1 = cells.bbox[i]
        m = inst[r0:r1, c0:c1] == i + 1
        assert m[0].any() and m[-1].any() and m[:, 0].any() and m[:, -1].any()
        if r0 > 0 and c0 > 0 and r1 < 256 and c1 < 256:
            assert ndi.label(m)[1] == 1, f"instance {i + 1} is in pieces"
            inner += 1
    assert inner > 0.7 * n
    ys, xs = np.nonzero(inst == 1)
    np.testing.assert_allclose(cells.centroid[0], (xs.mean(), ys.mean()))


def test_training_targets_in_range():
    tile = generate_tile(128, seed=9)
    t = tile.targets()
    assert t.hv.dtype == np.float32 and t.hv.shape == (2, 128, 128)
    assert np.abs(t.hv).max() <= 1.0 and np.abs(t.hv).max() > 0.9
    assert not t.hv[:, tile.inst_map == 0].any()  # HV is zero outside nuclei
    np.testing.assert_array_equal(t.binary, (tile.inst_map > 0).astype(np.uint8))
    np.testing.assert_array_equal(t.type_map, tile.type_map)


def test_glass_is_white_and_empty():
    tile = generate_tile(384, seed=21, preset="tumour", glass_fraction=0.6)
    white = tile.image.min(axis=2) > 205
    assert white.mean() > 0.25
    assert (tile.inst_map[white] > 0).mean() < 0.01  # no nuclei on glass
    assert tile.tissue == TISSUE_NAMES.index("Synthetic-Tumour")


def test_bad_size_is_refused():
    with pytest.raises(InputError, match="size"):
        generate_tile(0)
    with pytest.raises(InputError, match="preset"):
        generate_tile(64, preset="liver")
