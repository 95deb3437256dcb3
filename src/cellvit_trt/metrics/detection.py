"""Centroid detection and classification scores (HoVer-Net `pair_coordinates`, `_f1_type`).

Pairing is the upstream one: a Hungarian assignment (`linear_sum_assignment`) on the full Euclidean distance
matrix, then pairs farther than the radius are dropped. That is not the same as a maximum matching within the
radius, and it is what the published F1 figures use, so it is kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# 12 px at 40x (0.25 µm/px) = 3 µm; upstream uses 6 px at 20x.
RADIUS_PX_AT_40X = 12.0


def match_radius(magnification: float) -> float:
    """Pairing radius in pixels for a magnification (12 px at 40x, 6 px at 20x)."""
    return RADIUS_PX_AT_40X * float(magnification) / 40.0


# Above this many distance-matrix entries (about 2,000 x 2,000 cells, 32 MB), pairing is done per cluster of
# cells within reach of each other instead of on the full matrix.
DENSE_LIMIT = 4_000_000


def pair_coordinates(
    true_xy: np.ndarray, pred_xy: np.ndarray, radius: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(paired true idx, paired pred idx, unpaired true idx, unpaired pred idx).

    Up to `DENSE_LIMIT` matrix entries (every tile size in use) this is upstream's pairing exactly: Hungarian
    on the full distance matrix, then pairs beyond `radius` dropped. For larger sets (a whole slide at once)
    the full matrix is infeasible; pairs are then found per connected cluster of cells within `radius` of
    each other, with a minimum-distance maximum matching inside each cluster.
    """
    true_xy = np.asarray(true_xy, np.float64).reshape(-1, 2)
    pred_xy = np.asarray(pred_xy, np.float64).reshape(-1, 2)
    nt, np_ = true_xy.shape[0], pred_xy.shape[0]
    if nt == 0 or np_ == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.arange(nt, dtype=np.int64), np.arange(np_, dtype=np.int64)
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    if nt * np_ <= DENSE_LIMIT:
        dist = cdist(true_xy, pred_xy)
        a, b = linear_sum_assignment(dist)
        keep = dist[a, b] <= radius
        a, b = a[keep].astype(np.int64), b[keep].astype(np.int64)
    else:
        a, b = _pair_clusters(true_xy, pred_xy, radius)
    ut = np.ones(nt, bool)
    ut[a] = False
    up = np.ones(np_, bool)
    up[b] = False
    return a, b, np.flatnonzero(ut), np.flatnonzero(up)


def _pair_clusters(true_xy: np.ndarray, pred_xy: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    from scipy.optimize import linear_sum_assignment
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    nt, np_ = true_xy.shape[0], pred_xy.shape[0]
    near = cKDTree(true_xy).sparse_distance_matrix(cKDTree(pred_xy), radius, output_type="coo_matrix")
    if near.nnz == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    # bipartite graph on nt + np_ nodes; clusters are its connected components
    graph = coo_matrix((np.ones(near.nnz), (near.row, near.col + nt)), shape=(nt + np_, nt + np_))
    _, comp = connected_components(graph, directed=False)
    order = np.argsort(comp[near.row], kind="stable")
    rows, cols, dists = near.row[order], near.col[order], near.data[order]
    bounds = np.flatnonzero(np.diff(comp[rows])) + 1
    out_a, out_b = [], []
    big = 1e6 * (radius + 1.0)  # out-of-reach pairs: never chosen over an in-reach one
    for r, c, d in zip(np.split(rows, bounds), np.split(cols, bounds), np.split(dists, bounds), strict=True):
        ur, ri = np.unique(r, return_inverse=True)
        uc, ci = np.unique(c, return_inverse=True)
        cost = np.full((ur.size, uc.size), big)
        cost[ri, ci] = d
        i, j = linear_sum_assignment(cost)
        ok = cost[i, j] <= radius
        out_a.append(ur[i[ok]])
        out_b.append(uc[j[ok]])
    return np.concatenate(out_a).astype(np.int64), np.concatenate(out_b).astype(np.int64)


def detection_scores(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """(F1, precision, recall); NaN where undefined."""
    nan = float("nan")
    f1 = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else nan
    prec = tp / (tp + fp) if (tp + fp) else nan
    rec = tp / (tp + fn) if (tp + fn) else nan
    return float(f1), float(prec), float(rec)


def type_scores(
    paired_true: np.ndarray,
    paired_pred: np.ndarray,
    unpaired_true: np.ndarray,
    unpaired_pred: np.ndarray,
    type_id: int,
    w: tuple[float, float, float, float] = (2, 2, 1, 1),
) -> tuple[float, float, float]:
    """(F1, precision, recall) of one class: HoVer-Net `_f1_type` (CellViT `cell_type_detection_scores`).

    Among matched pairs where either side is the class: TP = both, FP = only pred, FN = only true (TN is 0
    after that filter); unmatched cells of the class are FPd/FNd with weight 1, misclassifications weight 2.
    """
    sel = (paired_true == type_id) | (paired_pred == type_id)
    t, p = paired_true[sel], paired_pred[sel]
    tp = float(((t == type_id) & (p == type_id)).sum())
    fp = float(((t != type_id) & (p == type_id)).sum())
    fn = float(((t == type_id) & (p != type_id)).sum())
    fp_d = float((unpaired_pred == type_id).sum())
    fn_d = float((unpaired_true == type_id).sum())
    nan = float("nan")

    def ratio(num: float, den: float) -> float:
        return num / den if den else nan

    prec = ratio(tp, tp + w[0] * fp + w[2] * fp_d)
    rec = ratio(tp, tp + w[1] * fn + w[3] * fn_d)
    f1 = ratio(2 * tp, 2 * tp + w[0] * fp + w[1] * fn + w[2] * fp_d + w[3] * fn_d)
    return f1, prec, rec


@dataclass
class DetectionPool:
    """Types of matched and unmatched cells pooled over a dataset (upstream pools TP/FP/FN over a fold)."""

    paired_true: list[np.ndarray] = field(default_factory=list)
    paired_pred: list[np.ndarray] = field(default_factory=list)
    paired_dist: list[np.ndarray] = field(default_factory=list)
    unpaired_true: list[np.ndarray] = field(default_factory=list)
    unpaired_pred: list[np.ndarray] = field(default_factory=list)

    def add(
        self,
        true_xy: np.ndarray,
        true_types: np.ndarray,
        pred_xy: np.ndarray,
        pred_types: np.ndarray,
        radius: float,
    ) -> tuple[int, int, int]:
        a, b, ua, ub = pair_coordinates(true_xy, pred_xy, radius)
        self.paired_true.append(np.asarray(true_types)[a])
        self.paired_pred.append(np.asarray(pred_types)[b])
        if a.size:
            self.paired_dist.append(np.hypot(*(np.asarray(true_xy)[a] - np.asarray(pred_xy)[b]).T))
        self.unpaired_true.append(np.asarray(true_types)[ua])
        self.unpaired_pred.append(np.asarray(pred_types)[ub])
        return int(a.size), int(ub.size), int(ua.size)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        def cat(xs: list[np.ndarray]) -> np.ndarray:
            return np.concatenate(xs).astype(np.int64) if xs else np.zeros(0, np.int64)

        return cat(self.paired_true), cat(self.paired_pred), cat(self.unpaired_true), cat(self.unpaired_pred)

    def summary(self, class_ids: list[int]) -> dict:
        pt, pp, ut, up = self.arrays()
        tp, fp, fn = int(pt.size), int(up.size), int(ut.size)
        f1, prec, rec = detection_scores(tp, fp, fn)
        per_class = {}
        for c in class_ids:
            cf1, cp, cr = type_scores(pt, pp, ut, up, c)
            per_class[c] = {"f1": cf1, "precision": cp, "recall": cr}
        dist = np.concatenate(self.paired_dist) if self.paired_dist else np.zeros(0)
        return {
            "tp": tp,
            "fp": fp,
            "fn": fn,
            "f1": f1,
            "precision": prec,
            "recall": rec,
            "type_agreement": float((pt == pp).mean()) if pt.size else float("nan"),
            "mean_centroid_distance": float(dist.mean()) if dist.size else float("nan"),
            "per_class": per_class,
        }
