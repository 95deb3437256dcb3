"""synthetic.targets reproduces the upstream HoVer target generation (upstream's NumPy form below)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import center_of_mass

from cellvit_trt.errors import InputError
from cellvit_trt.synthetic.targets import hv_map, make_targets, type_map


def _reference_hv(inst_map: np.ndarray) -> np.ndarray:
    """Upstream PanNukeDataset.gen_instance_hv_map, per-instance loop (column bound uses the width)."""
    h, w = inst_map.shape
    x_map = np.zeros((h, w), np.float32)
    y_map = np.zeros((h, w), np.float32)
    for inst_id in np.unique(inst_map)[1:] if (inst_map == 0).any() else np.unique(inst_map):
        m = np.array(inst_map == inst_id, np.uint8)
        rows, cols = np.any(m, 1), np.any(m, 0)
        r0, r1 = np.where(rows)[0][[0, -1]] + [0, 1]
        c0, c1 = np.where(cols)[0][[0, -1]] + [0, 1]
        r0 = r0 - 2 if r0 >= 2 else r0
        c0 = c0 - 2 if c0 >= 2 else c0
        r1 = r1 + 2 if r1 <= h - 2 else r1
        c1 = c1 + 2 if c1 <= w - 2 else c1
        crop = m[r0:r1, c0:c1]
        if crop.shape[0] < 2 or crop.shape[1] < 2:
            continue
        com = list(center_of_mass(crop))
        com = [int(com[0] + 0.5), int(com[1] + 0.5)]
        xr = np.arange(1, crop.shape[1] + 1) - com[1]
        yr = np.arange(1, crop.shape[0] + 1) - com[0]
        ix, iy = np.meshgrid(xr, yr)
        ix[crop == 0] = 0
        iy[crop == 0] = 0
        ix = ix.astype("float32")
        iy = iy.astype("float32")
        if np.min(ix) < 0:
            ix[ix < 0] /= -np.amin(ix[ix < 0])
        if np.min(iy) < 0:
            iy[iy < 0] /= -np.amin(iy[iy < 0])
        if np.max(ix) > 0:
            ix[ix > 0] /= np.amax(ix[ix > 0])
        if np.max(iy) > 0:
            iy[iy > 0] /= np.amax(iy[iy > 0])
        x_map[r0:r1, c0:c1][crop > 0] = ix[crop > 0]
        y_map[r0:r1, c0:c1][crop > 0] = iy[crop > 0]
    return np.stack([x_map, y_map])


def _random_instances(rng: np.random.Generator, h: int, w: int, n: int) -> np.ndarray:
    inst = np.zeros((h, w), np.int32)
    yy, xx = np.mgrid[:h, :w]
    for i in range(1, n + 1):
        cy, cx = rng.uniform(-5, h + 5), rng.uniform(-5, w + 5)
        ry, rx = rng.uniform(1, 12, size=2)
        inst[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = i
    return inst


@pytest.mark.parametrize("shape,n,seed", [((64, 64), 12, 0), ((96, 160), 40, 1), ((128, 128), 80, 2)])
def test_hv_map_matches_upstream_bit_for_bit(shape, n, seed):
    inst = _random_instances(np.random.default_rng(seed), *shape, n)
    ours = hv_map(inst)
    assert ours.dtype == np.float32 and ours.shape == (2, *shape)
    np.testing.assert_array_equal(ours, _reference_hv(inst))
    assert ours.min() >= -1 and ours.max() <= 1


def test_hv_map_tiny_and_degenerate_instances():
    inst = np.zeros((6, 7), np.int32)
    inst[0, 0] = 1  # single pixel in the corner
    inst[2:5, 3] = 2  # one column wide
    inst[5, 6] = 3  # corner
    np.testing.assert_array_equal(hv_map(inst), _reference_hv(inst))
    assert not hv_map(np.zeros((4, 4), np.int32)).any()


def test_make_targets_and_type_map():
    inst = np.zeros((8, 8), np.int32)
    inst[1:3, 1:3] = 1
    inst[5:7, 5:8] = 4
    t = make_targets(inst, {1: 2, 4: 5})
    assert t.binary.dtype == np.uint8 and int(t.binary.sum()) == 10
    assert set(np.unique(t.type_map)) == {0, 2, 5}
    np.testing.assert_array_equal(type_map(inst, np.array([0, 2, 0, 0, 5])), t.type_map)
    with pytest.raises(InputError, match="inst_types"):
        type_map(inst, {1: 2})
    with pytest.raises(InputError, match="inst_map"):
        hv_map(np.zeros((2, 3, 4), np.int32))
    with pytest.raises(InputError, match="inst_map"):
        hv_map(np.zeros((3, 3), np.float32))
