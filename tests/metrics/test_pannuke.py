"""PanNuke loader: upstream conversion (prepare_pannuke.py re-typed), layouts, memory mapping, bad layouts."""

from __future__ import annotations

import numpy as np
import pytest
from metrics_reference import random_instance_map, ref_remap_label

from cellvit_trt.errors import InputError
from cellvit_trt.metrics.pannuke import open_pannuke_fold, pannuke_labels, write_pannuke_fold


def _ref_prepare(mask):
    """TIO-IKIM/CellViT cell_segmentation/datasets/prepare_pannuke.py::process_fold, one mask, literally."""
    inst_map = np.zeros(mask.shape[:2])
    num_nuc = 0
    for j in range(5):
        layer_res = ref_remap_label(mask[:, :, j])
        inst_map = np.where(layer_res != 0, layer_res + num_nuc, inst_map)
        num_nuc = num_nuc + np.max(layer_res)
    inst_map = ref_remap_label(inst_map)
    type_map = np.zeros(mask.shape[:2]).astype(np.int32)
    for j in range(5):
        layer_res = ((j + 1) * np.clip(mask[:, :, j], 0, 1)).astype(np.int32)
        type_map = np.where(layer_res != 0, layer_res, type_map)
    return inst_map, type_map


def _random_masks(rng, n, size=48):
    masks = np.zeros((n, size, size, 6))
    for i in range(n):
        for j in range(5):  # channels overlap each other and reuse ids, as the conversion must handle
            if rng.random() < 0.7:
                masks[i, ..., j] = random_instance_map(rng, size, int(rng.integers(1, 6)))
        masks[i, ..., 5] = masks[i, ..., :5].sum(-1) == 0
    return masks


def test_labels_equal_prepare_pannuke():
    rng = np.random.default_rng(0)
    for mask in _random_masks(rng, 8):
        inst, tmap, types = pannuke_labels(mask)
        ref_inst, ref_type = _ref_prepare(mask)
        np.testing.assert_array_equal(inst, ref_inst)
        np.testing.assert_array_equal(tmap, ref_type)
        for k, t in enumerate(types, start=1):  # instance type = the type of all its pixels
            assert np.all(tmap[inst == k] == t)


@pytest.mark.parametrize("nested", [False, True])
def test_fold_round_trip_memory_mapped(tmp_path, nested):
    rng = np.random.default_rng(1)
    n, size = 5, 48
    insts = [random_instance_map(rng, size, 6) for _ in range(n)]
    types = [np.where(m > 0, (m % 5) + 1, 0) for m in insts]
    images = rng.integers(0, 256, (n, size, size, 3)).astype(np.float64)
    tissues = ["Colon", "Lung", "Colon", "Skin", "Lung"]
    if nested:  # the official download: Fold 1/images/fold1/{images,types}.npy, Fold 1/masks/fold1/masks.npy
        tmp = write_pannuke_fold(tmp_path / "staging", images, insts, types, tissues)
        root = tmp_path / "Fold 1"
        (root / "images" / "fold1").mkdir(parents=True)
        (root / "masks" / "fold1").mkdir(parents=True)
        for name, sub in (("images.npy", "images"), ("types.npy", "images"), ("masks.npy", "masks")):
            (tmp / name).rename(root / sub / "fold1" / name)
    else:
        root = write_pannuke_fold(tmp_path / "fold0", images, insts, types, tissues)
    fold = open_pannuke_fold(root)
    assert isinstance(fold.masks, np.memmap) and isinstance(fold.images, np.memmap)
    assert len(fold) == n and fold.tile_shape == (size, size)
    assert fold.tissue(3) == "Skin"
    np.testing.assert_array_equal(fold.batch(1, 3), images[1:3].astype(np.uint8))
    for i in range(n):
        got = fold.instances(i)
        # Same partition (ids are renumbered channel by channel), same type per pixel.
        pairs = np.unique(np.stack([got.inst_map.ravel(), insts[i].ravel()]), axis=1)
        assert pairs.shape[1] == len(np.unique(insts[i])) == len(got) + 1
        type_px = np.concatenate([[0], got.types])[got.inst_map]
        np.testing.assert_array_equal(type_px, types[i])


def test_bad_layouts_name_file_and_field(tmp_path):
    with pytest.raises(InputError, match="no images.npy"):
        open_pannuke_fold(tmp_path)
    np.save(tmp_path / "images.npy", np.zeros((2, 8, 8, 3)))
    np.save(tmp_path / "masks.npy", np.zeros((2, 8, 8, 5)))
    np.save(tmp_path / "types.npy", np.array(["a", "b"]))
    with pytest.raises(InputError, match=r"masks.npy: expected masks \[N, H, W, 6\]"):
        open_pannuke_fold(tmp_path)
    np.save(tmp_path / "masks.npy", np.zeros((3, 8, 8, 6)))
    with pytest.raises(InputError, match="differs from"):
        open_pannuke_fold(tmp_path)
    np.save(tmp_path / "masks.npy", np.zeros((2, 8, 8, 6)))
    np.save(tmp_path / "types.npy", np.array(["a"]))
    with pytest.raises(InputError, match="types.npy: expected one tissue name per image"):
        open_pannuke_fold(tmp_path)
    np.save(tmp_path / "types.npy", np.array(["a", None], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="pickled/object arrays are refused"):
        open_pannuke_fold(tmp_path)
    np.save(tmp_path / "types.npy", np.array(["a", "b"]))
    np.save(tmp_path / "images.npy", np.zeros((2, 8, 8)))
    with pytest.raises(InputError, match=r"images.npy: expected images \[N, H, W, 3\]"):
        open_pannuke_fold(tmp_path)
