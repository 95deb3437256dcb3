"""PQ, matching and instance helpers: hand-computed cases and the literal HoVer-Net formulas."""

from __future__ import annotations

import numpy as np
import pytest
from metrics_reference import perturb, random_instance_map, ref_get_fast_pq, ref_remap_label

from cellvit_trt.errors import InputError
from cellvit_trt.metrics import Instances, get_fast_pq, match, remap_label
from cellvit_trt.metrics.instances import majority_types


def test_hand_computed_pq():
    # true: A = 3x3 square (9 px), B = 3x3 square (9 px), C = 2x2 (4 px)
    true = np.zeros((10, 10), np.int32)
    true[0:3, 0:3] = 1
    true[5:8, 5:8] = 2
    true[0:2, 8:10] = 3
    pred = np.zeros((10, 10), np.int32)
    pred[0:3, 0:2] = 40  # 6 px inside A: IoU 6/9 -> TP
    pred[5:8, 6:9] = 7  # overlaps B by 6 of 9+9-6=12: IoU 0.5 exactly -> NOT a match (needs > 0.5)
    pred[8:10, 0:2] = 9  # no overlap -> FP
    # TP=1 (IoU 2/3), FP=2 (7, 9), FN=2 (B, C)
    dq, sq, pq = get_fast_pq(true, pred)
    assert dq == pytest.approx(1 / (1 + 0.5 * 2 + 0.5 * 2))
    assert sq == pytest.approx(2 / 3)
    assert pq == pytest.approx(2 / 3 / 3)
    m = match(Instances.from_maps(true), Instances.from_maps(pred))
    assert m.true_idx.tolist() == [0] and m.pred_idx.tolist() == [2]  # pred ids ascending: 7, 9, 40
    assert m.iou.tolist() == pytest.approx([2 / 3])
    # Binary Dice: |T|=22, |P|=6+9+4=19, overlap 6+6=12
    assert m.dice == pytest.approx(2 * 12 / (22 + 19))


def test_lower_match_iou_uses_hungarian():
    true = np.zeros((10, 10), np.int32)
    true[5:8, 5:8] = 2
    pred = np.zeros((10, 10), np.int32)
    pred[5:8, 6:9] = 7  # IoU 0.5
    assert get_fast_pq(true, pred, match_iou=0.5)[0] == 0.0
    dq, sq, _ = get_fast_pq(true, pred, match_iou=0.4)
    assert dq == pytest.approx(1.0) and sq == pytest.approx(0.5)


def test_perfect_and_empty():
    rng = np.random.default_rng(0)
    t = random_instance_map(rng)
    shuffled = np.where(t > 0, t * 7 + 3, 0)  # same partition, other ids
    assert get_fast_pq(t, shuffled) == pytest.approx((1.0, 1.0, 1.0))
    dq, sq, pq = get_fast_pq(t, np.zeros_like(t))
    assert (dq, sq, pq) == (0.0, 0.0, 0.0)
    assert np.isnan(get_fast_pq(np.zeros_like(t), np.zeros_like(t))[0])


@pytest.mark.parametrize("match_iou", [0.5, 0.3])
def test_matches_hovernet_on_random_maps(match_iou):
    rng = np.random.default_rng(1)
    for _ in range(25):
        t = random_instance_map(rng, 64, int(rng.integers(0, 15)))
        p = perturb(rng, t)
        ours = get_fast_pq(t, p, match_iou)
        ref, _ = ref_get_fast_pq(ref_remap_label(t), ref_remap_label(p), match_iou)
        if np.isnan(ours[0]):
            assert len(np.unique(t)) == 1 and len(np.unique(p)) == 1
            continue
        assert ours == pytest.approx(ref, abs=1e-5)


def test_remap_label_matches_reference_and_sparse_ids():
    rng = np.random.default_rng(2)
    t = random_instance_map(rng)
    big = np.where(t > 0, t.astype(np.int64) * 10_000_000, 0)  # forces the sort-based path
    np.testing.assert_array_equal(remap_label(t), ref_remap_label(t))
    np.testing.assert_array_equal(remap_label(big), ref_remap_label(big))


def test_from_cells_ignores_instances_not_in_table():
    inst = np.zeros((6, 6), np.int32)
    inst[0:2, 0:2] = 1
    inst[3:6, 3:6] = 2
    pred = Instances.from_cells(inst, ids=[2], types=[1])
    true = Instances.from_maps(inst, (inst > 0).astype(np.int32))
    m = match(true, pred)
    assert (m.n_true, m.n_pred, m.true_idx.tolist()) == (2, 1, [1])
    assert pred.centroids.tolist() == [[4.0, 4.0]]


def test_majority_type_rules():
    inst = np.array([[1, 1, 1, 2, 2, 2, 3, 3]])
    typ = np.array([[0, 0, 4, 2, 3, 0, 0, 0]])
    lab = inst.reshape(-1)
    # 1: background 2 vs type 4 once -> background loses; 2: tie 2 vs 3 -> lower id; 3: only background -> 0
    assert majority_types(lab, 3, typ).tolist() == [4, 2, 0]


def test_bad_inputs_raise_input_error():
    with pytest.raises(InputError, match="2-D"):
        Instances.from_maps(np.zeros((2, 2, 2)))
    with pytest.raises(InputError, match=">= 0"):
        Instances.from_maps(-np.ones((2, 2), np.int32))
    with pytest.raises(InputError, match="'type' has"):
        Instances.from_cells(np.zeros((2, 2), np.int32), [1, 2], [1])
    with pytest.raises(InputError, match="distinct positive"):
        Instances.from_cells(np.zeros((2, 2), np.int32), [1, 1], [1, 1])
    with pytest.raises(InputError, match="non-integer"):
        Instances.from_maps(np.full((2, 2), 0.5))
