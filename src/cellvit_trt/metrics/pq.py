"""Panoptic quality (HoVer-Net `get_fast_pq`) from one sparse contingency table per image.

The pairwise intersections of all true and predicted instances come from a single `np.bincount` (or
`np.unique`) over the paired labels of overlapping pixels, so an image costs O(H·W), not O(K·H·W) like the
reference's per-instance full-frame masks. IoU of a pair depends only on the two instances, so per-class PQ
of mPQ is a restriction of the same pairs: one contingency serves bPQ, mPQ and mPQ+.

With `match_iou >= 0.5`, pairs with IoU > match_iou are unique (an instance can overlap at most one other by
more than half its union), exactly as in HoVer-Net. Below 0.5, pairs come from a maximal-IoU Hungarian
assignment as in HoVer-Net's exhaustive branch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cellvit_trt.metrics.instances import Instances

# Dense bincount while the table is at most this many cells more than the overlapping pixels.
_DENSE_SLACK = 1 << 18


@dataclass(frozen=True)
class Matching:
    """Unique IoU matching of one image. Indices are 0-based positions in the Instances' arrays."""

    true_idx: np.ndarray  # int64 [M]
    pred_idx: np.ndarray  # int64 [M]
    iou: np.ndarray  # float64 [M]
    n_true: int
    n_pred: int
    fg_true: int = 0  # pixels of scored true instances
    fg_pred: int = 0  # pixels of scored predicted instances
    fg_both: int = 0  # pixels in both

    @property
    def dice(self) -> float:
        """Binary foreground Dice of the scored instances (NaN when both are empty)."""
        denom = self.fg_true + self.fg_pred
        return 2.0 * self.fg_both / denom if denom else float("nan")


@dataclass(frozen=True)
class PQStats:
    tp: int
    fp: int
    fn: int
    iou_sum: float

    @property
    def dq(self) -> float:
        return _dq(self.tp, self.fp, self.fn)

    @property
    def sq(self) -> float:
        return _sq(self.tp, self.iou_sum)

    @property
    def pq(self) -> float:
        return self.dq * self.sq


def _dq(tp: float, fp: float, fn: float) -> float:
    denom = tp + 0.5 * fp + 0.5 * fn
    return float(tp / denom) if denom > 0 else float("nan")


def _sq(tp: float, iou_sum: float) -> float:
    # HoVer-Net divides by (TP + 1e-6); the exact mean differs by < 1e-6 relative and is 1.0 when perfect.
    return float(iou_sum / tp) if tp > 0 else 0.0


def pq_from_counts(tp: float, fp: float, fn: float, iou_sum: float) -> tuple[float, float, float]:
    """(DQ, SQ, PQ) as HoVer-Net: DQ = TP/(TP+FP/2+FN/2), SQ = mean IoU of the matched pairs, PQ = DQ·SQ."""
    dq = _dq(tp, fp, fn)
    sq = _sq(tp, iou_sum)
    return dq, sq, dq * sq


def contingency(
    true_lab: np.ndarray, n_true: int, pred_lab: np.ndarray, n_pred: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Overlapping (true label, pred label, pixel count) triples; labels are compact 1-based."""
    both = (true_lab > 0) & (pred_lab > 0)
    t = true_lab[both].astype(np.int64)
    p = pred_lab[both].astype(np.int64)
    width = n_pred + 1
    codes = t * width + p
    cells = (n_true + 1) * width
    if cells <= codes.size + _DENSE_SLACK:
        counts = np.bincount(codes, minlength=cells)
        nz = np.flatnonzero(counts)
        return nz // width, nz % width, counts[nz]
    uniq, counts = np.unique(codes, return_counts=True)
    return uniq // width, uniq % width, counts


def match(true: Instances, pred: Instances, match_iou: float = 0.5) -> Matching:
    """Pair true and predicted instances by IoU > match_iou (unique pairs)."""
    if match_iou < 0:
        raise ValueError(f"match_iou must be >= 0, got {match_iou}")
    if true.shape != pred.shape:
        raise ValueError(f"true map {true.shape} and predicted map {pred.shape} differ in shape")
    n_t, n_p = len(true), len(pred)
    t_lab = true.labels()
    p_lab = pred.labels()
    t_area = np.bincount(t_lab, minlength=n_t + 1)
    p_area = np.bincount(p_lab, minlength=n_p + 1)
    ti, pi, inter = contingency(t_lab, n_t, p_lab, n_p)
    inter_all = inter.sum()
    iou = inter / (t_area[ti] + p_area[pi] - inter)
    if match_iou >= 0.5:
        keep = iou > match_iou
        ti, pi, iou = ti[keep], pi[keep], iou[keep]
    elif ti.size:
        from scipy.optimize import linear_sum_assignment

        rows, r_inv = np.unique(ti, return_inverse=True)
        cols, c_inv = np.unique(pi, return_inverse=True)
        dense = np.zeros((rows.size, cols.size))
        dense[r_inv, c_inv] = iou
        r, c = linear_sum_assignment(-dense)
        got = dense[r, c]
        keep = got > match_iou
        ti, pi, iou = rows[r[keep]], cols[c[keep]], got[keep]
    fg_t, fg_p = int(t_area[1:].sum()), int(p_area[1:].sum())
    return Matching(ti - 1, pi - 1, iou.astype(np.float64), n_t, n_p, fg_t, fg_p, int(inter_all))


def pq_stats(m: Matching) -> PQStats:
    tp = int(m.true_idx.size)
    return PQStats(tp, m.n_pred - tp, m.n_true - tp, float(m.iou.sum()))


def class_stats(m: Matching, true_types: np.ndarray, pred_types: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-class [tp, fp, fn, iou_sum, n_true] (float64 [num_classes, 5]) on each class's own instances.

    A pair counts for class c only when both instances are of class c (mPQ compares class-c maps).
    """
    out = np.zeros((num_classes, 5))
    tt = np.clip(true_types, 0, num_classes - 1)
    pt = np.clip(pred_types, 0, num_classes - 1)
    n_true = np.bincount(tt, minlength=num_classes)[:num_classes]
    n_pred = np.bincount(pt, minlength=num_classes)[:num_classes]
    a, b = tt[m.true_idx], pt[m.pred_idx]
    same = a == b
    tp = np.bincount(a[same], minlength=num_classes)[:num_classes]
    iou = np.bincount(a[same], weights=m.iou[same], minlength=num_classes)[:num_classes]
    out[:, 0] = tp
    out[:, 1] = n_pred - tp
    out[:, 2] = n_true - tp
    out[:, 3] = iou
    out[:, 4] = n_true
    return out


def get_fast_pq(
    true_map: np.ndarray, pred_map: np.ndarray, match_iou: float = 0.5
) -> tuple[float, float, float]:
    """(DQ, SQ, PQ) of two instance maps, the HoVer-Net `get_fast_pq` figures (remapping is implicit)."""
    t = Instances.from_maps(true_map, name="true")
    p = Instances.from_maps(pred_map, name="pred")
    s = pq_stats(match(t, p, match_iou))
    return pq_from_counts(s.tp, s.fp, s.fn, s.iou_sum)
