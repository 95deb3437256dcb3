"""Dataset metrics: CellViT's evaluation re-typed literally vs ours, detection pairing, perturbations."""

from __future__ import annotations

import numpy as np
import pytest
from metrics_reference import (
    perturb,
    random_instance_map,
    ref_cell_type_detection_scores,
    ref_dataset,
    ref_pair_coordinates,
)

from cellvit_trt.errors import InputError
from cellvit_trt.metrics import Evaluator, Instances, agreement, evaluate, pair_coordinates
from cellvit_trt.metrics.detection import match_radius, type_scores


def _random_dataset(seed: int, n_images: int = 20, size: int = 64):
    rng = np.random.default_rng(seed)
    gts, preds = [], []
    for k in range(n_images):
        n = 0 if k == 3 else int(rng.integers(3, 16))  # one image without ground truth
        g = random_instance_map(rng, size, n)
        if n:  # specks and 1 px lines: scored by PQ, left out of detection as upstream does
            g[int(rng.integers(0, size)), int(rng.integers(0, size))] = 900
            r0 = int(rng.integers(0, size - 6))
            g[r0, r0 : r0 + 5] = 901
            g[np.arange(r0, r0 + 4), np.arange(r0, r0 + 4) + 1] = 902  # diagonal
        g_types = {int(i): int(rng.integers(1, 4)) for i in np.unique(g) if i}  # classes 4, 5 never in GT
        p = perturb(rng, g, shift=3, drop=0.15, extra=3)
        # Predicted types: mostly right, some wrong, some type 0 (excluded), some classes absent from GT.
        p_types = {}
        for i in np.unique(p):
            if not i:
                continue
            ys, xs = np.nonzero(p == i)
            under = g[ys, xs]
            base = g_types.get(int(np.bincount(under).argmax()), 0) if under.any() else 0
            r = rng.random()
            p_types[int(i)] = base if (r < 0.7 and base) else int(rng.integers(0, 6))
        gts.append((g, g_types))
        preds.append((p, p_types))
    return gts, preds


def _to_instances(g, g_types, p, p_types):
    t_map = np.zeros_like(g)
    for i, t in g_types.items():
        t_map[g == i] = t
    true = Instances.from_maps(g, t_map)
    p_ids = np.array(sorted(p_types), np.int64)
    pred = Instances.from_cells(p, p_ids, [p_types[i] for i in p_ids])
    return true, pred


@pytest.mark.parametrize("seed", [0, 1])
def test_dataset_metrics_equal_cellvit_reference(seed):
    gts, preds = _random_dataset(seed)
    ref = ref_dataset(gts, preds, num_classes=6, radius=12.0)
    ev = Evaluator(num_classes=6, magnification=40)
    for (g, gt), (p, pt) in zip(gts, preds, strict=False):
        ev.add(*_to_instances(g, gt, p, pt))
    res = ev.result()
    d = res["dataset"]
    assert d["bPQ"] == pytest.approx(ref["bPQ"], abs=1e-5)
    assert d["mPQ"] == pytest.approx(ref["mPQ"], abs=1e-5)
    assert (d["f1"], d["precision"], d["recall"]) == pytest.approx(
        (ref["f1"], ref["precision"], ref["recall"]), abs=1e-12
    )
    names = ["Background", "Neoplastic", "Inflammatory", "Connective", "Dead", "Epithelial"]
    for c in range(1, 6):
        got = res["per_class"][names[c]]["f1"]
        want = ref["per_class_f1"][c]
        assert (np.isnan(want) and got is None) or got == pytest.approx(want, abs=1e-12)
    # Image-level values too, NaN where the reference has NaN.
    bpq_ours = np.array([s.bpq for s in ev.images])
    np.testing.assert_allclose(bpq_ours, ref["bpq_images"], atol=1e-5)
    cls_ours = np.array([s.class_pq for s in ev.images])
    np.testing.assert_allclose(cls_ours[:, 1:], ref["class_pq_images"][:, 1:], atol=1e-5)
    assert np.isnan(cls_ours[:, 4:]).all()  # classes absent from GT are NaN, never penalised


def test_pair_coordinates_equals_reference():
    rng = np.random.default_rng(3)
    for _ in range(20):
        a = rng.uniform(0, 60, (int(rng.integers(1, 30)), 2))
        b = np.concatenate(
            [a[rng.random(len(a)) < 0.8] + rng.normal(0, 5, (1, 2)), rng.uniform(0, 60, (3, 2))]
        )
        b = rng.permutation(b)
        pa, pb, ua, ub = pair_coordinates(a, b, 6.0)
        ref, rua, rub = ref_pair_coordinates(a, b, 6.0)
        assert sorted(zip(pa.tolist(), pb.tolist(), strict=False)) == sorted(map(tuple, ref.tolist()))
        assert ua.tolist() == rua.tolist() and ub.tolist() == rub.tolist()


def test_type_scores_equal_reference_and_hand_case():
    # pairs (true, pred): (1,1) (1,2) (2,1) (3,3); unpaired true [1], unpaired pred [1, 1]
    pt, pp = np.array([1, 1, 2, 3]), np.array([1, 2, 1, 3])
    ut, up = np.array([1]), np.array([1, 1])
    f1, prec, rec = type_scores(pt, pp, ut, up, 1)
    # class 1: TP=1, FP=1 (2->1), FN=1 (1->2), FPd=2, FNd=1: F1 = 2/(2+2+2+2+1)
    assert f1 == pytest.approx(2 / 9)
    assert prec == pytest.approx(1 / (1 + 2 + 2)) and rec == pytest.approx(1 / (1 + 2 + 1))
    assert (f1, prec, rec) == pytest.approx(ref_cell_type_detection_scores(pt, pp, ut, up, 1))
    assert match_radius(40) == 12.0 and match_radius(20) == 6.0


def _grid_dataset(n_images=6, rows=5, cols=5, size=100, types=(1, 2, 3)):
    """Well separated 6x6 squares with cycling types: exact, easy ground truth."""
    out = []
    for k in range(n_images):
        inst = np.zeros((size, size), np.int32)
        ids, tys = [], []
        for r in range(rows):
            for c in range(cols):
                i = r * cols + c + 1
                inst[r * 20 + 5 : r * 20 + 11, c * 20 + 5 : c * 20 + 11] = i
                ids.append(i)
                tys.append(types[(i + k) % len(types)])
        out.append(Instances.from_cells(inst, ids, tys))
    return out


def test_dropped_cells_lower_recall_by_the_dropped_fraction():
    gt = _grid_dataset()
    total = sum(len(g) for g in gt)
    drop = 2  # per image
    preds = [g.restricted(np.arange(len(g)) >= drop) for g in gt]
    d = evaluate(gt, preds)["dataset"]
    kept = total - drop * len(gt)
    assert d["recall"] == pytest.approx(kept / total)
    assert d["precision"] == 1.0
    assert d["f1"] == pytest.approx(2 * kept / (2 * kept + drop * len(gt)))
    # bPQ per image: TP=23, FN=2, SQ=1 -> DQ = 23/24
    assert d["bPQ"] == pytest.approx(23 / 24)


def test_relabelled_types_lower_mpq_and_type_f1():
    gt = _grid_dataset(n_images=1)
    g = gt[0]
    flip = g.types == 1  # every class-1 cell predicted as class 2
    pred = Instances(g.inst_map, g.ids, np.where(flip, 2, g.types), g.centroids)
    res = evaluate([g], [pred])
    d = res["dataset"]
    assert d["bPQ"] == pytest.approx(1.0) and d["f1"] == 1.0
    n1, n2 = int(flip.sum()), int((g.types == 2).sum())
    # class 1: TP 0 -> PQ 0; class 2: TP n2, FP n1 -> DQ = n2/(n2+n1/2); class 3 perfect
    pq2 = n2 / (n2 + 0.5 * n1)
    assert d["mPQ"] == pytest.approx((0 + pq2 + 1) / 3)
    assert res["per_class"]["Neoplastic"]["pq"] == 0.0
    assert d["type_agreement"] == pytest.approx(1 - n1 / len(g))


def test_tissue_averaging_and_mpq_plus():
    gt = _grid_dataset(n_images=3)
    preds = [gt[0], gt[1].restricted(np.arange(len(gt[1])) >= 5), gt[2]]
    res = evaluate(gt, preds, tissues=["Colon", "Colon", "Lung"])
    pq_img1 = 20 / 22.5
    assert res["per_tissue"]["Colon"]["bPQ"] == pytest.approx((1 + pq_img1) / 2)
    assert res["per_tissue"]["Lung"]["bPQ"] == pytest.approx(1.0)
    assert res["tissue_averaged"]["bPQ"] == pytest.approx(((1 + pq_img1) / 2 + 1) / 2)
    assert res["dataset"]["bPQ"] == pytest.approx((2 + pq_img1) / 3)
    # mPQ+ pools counts over images: per class (tp, fn) summed, then PQ, then the class mean
    plus = []
    for c in (1, 2, 3):
        n = sum(int((g.types == c).sum()) for g in gt)
        fn = int((gt[1].types[:5] == c).sum())
        plus.append((n - fn) / (n - fn + 0.5 * fn))
    assert res["dataset"]["mPQ+"] == pytest.approx(np.mean(plus))


def test_predicted_type0_cells_are_not_scored():
    g = _grid_dataset(n_images=1)[0]
    pred = Instances(g.inst_map, g.ids, np.where(np.arange(len(g)) < 5, 0, g.types), g.centroids)
    d = evaluate([g], [pred])["dataset"]
    assert d["recall"] == pytest.approx(20 / 25) and d["precision"] == 1.0


def test_agreement_identity_and_shift():
    gt = _grid_dataset(n_images=2)
    a = agreement(gt, gt)
    for k in ("bpq", "mpq", "f1", "precision", "recall", "type_agreement", "dice"):
        assert a[k] == 1.0, k
    shifted = [Instances(np.roll(g.inst_map, 1, axis=1), g.ids, g.types, g.centroids + [1, 0]) for g in gt]
    b = agreement(shifted, gt, match_radius=12)
    assert b["f1"] == 1.0 and b["mean_centroid_distance"] == pytest.approx(1.0)
    assert b["bpq"] == pytest.approx(30 / 42)  # 6x6 squares moved 1 px: IoU = 30/42, all matched
    far = [Instances(np.roll(g.inst_map, 3, axis=1), g.ids, g.types, g.centroids + [3, 0]) for g in gt]
    c = agreement(far, gt, match_radius=12)
    assert c["bpq"] == 0.0 and c["f1"] == 1.0  # IoU 18/54 < 0.5: no PQ match, centroids still within 12 px


def test_large_sets_pair_per_cluster(monkeypatch):
    """Above the dense limit (a whole slide), pairing is per cluster of cells within reach: the same pairs as
    upstream's full-matrix Hungarian on jittered points, and never fewer pairs when spurious points make the
    full assignment trade near pairs for far ones."""
    from cellvit_trt.metrics import detection

    rng = np.random.default_rng(5)
    grid = np.stack(np.meshgrid(np.arange(40), np.arange(40)), -1).reshape(-1, 2) * 30.0
    a = grid + rng.normal(0, 1, grid.shape)
    keep = rng.random(len(grid)) < 0.9
    b = rng.permutation(grid[keep] + rng.normal(0, 3, (keep.sum(), 2)))
    noisy = np.concatenate([b, rng.uniform(0, 1200, (50, 2))])
    dense = pair_coordinates(a, b, 12.0)
    dense_noisy = pair_coordinates(a, noisy, 12.0)
    monkeypatch.setattr(detection, "DENSE_LIMIT", 0)
    sparse = pair_coordinates(a, b, 12.0)
    assert sorted(zip(*dense[:2], strict=True)) == sorted(zip(*sparse[:2], strict=True))
    assert dense[2].tolist() == sparse[2].tolist() and dense[3].tolist() == sparse[3].tolist()
    pa, pb, ua, ub = pair_coordinates(a, noisy, 12.0)
    assert len(pa) >= len(dense_noisy[0]) and len(set(pa)) == len(pa) and len(set(pb)) == len(pb)
    assert np.all(np.hypot(*(a[pa] - noisy[pb]).T) <= 12.0)
    assert len(pa) + len(ua) == len(a) and len(pb) + len(ub) == len(noisy)


def test_class_ids_beyond_the_evaluator_are_refused():
    g = _grid_dataset(n_images=1, types=(1, 7))[0]
    with pytest.raises(InputError, match=r"true class ids span 1..7, but the evaluator has 6 classes"):
        Evaluator(num_classes=6).add(g, g)
