"""Agreement figures between our TileCells and the oracle's (instance map, cell dict)."""

from __future__ import annotations

import numpy as np


def panoptic_quality(a: np.ndarray, b: np.ndarray) -> float:
    """PQ of instance map `a` against `b` (IoU > 0.5 matching); 1.0 when both are empty."""
    a = a.astype(np.int64).ravel()
    b = b.astype(np.int64).ravel()
    na, nb = int(a.max(initial=0)), int(b.max(initial=0))
    ids_a = np.unique(a[a > 0])
    ids_b = np.unique(b[b > 0])
    if ids_a.size == 0 and ids_b.size == 0:
        return 1.0
    area_a = np.bincount(a, minlength=na + 1)
    area_b = np.bincount(b, minlength=nb + 1)
    both = (a > 0) & (b > 0)
    pair = a[both] * (nb + 1) + b[both]
    keys, inter = np.unique(pair, return_counts=True)
    ka, kb = keys // (nb + 1), keys % (nb + 1)
    iou = inter / (area_a[ka] + area_b[kb] - inter)
    tp = iou > 0.5
    n_tp = int(tp.sum())
    fp = ids_a.size - n_tp
    fn = ids_b.size - n_tp
    return float(iou[tp].sum() / (n_tp + 0.5 * fp + 0.5 * fn))


FIELDS = ("present", "type", "bbox", "centroid", "contour", "type_prob")


def field_agreement(ours: dict, oracle: dict) -> dict:
    """Fraction of cells (union of ids) with a bit-identical field; oracle type-0 cells dropped (WSI path)."""
    oracle = {int(k): v for k, v in oracle.items() if v["type"] != 0}
    ids = sorted(set(ours) | set(oracle))
    same = {f: 0 for f in FIELDS}
    for i in ids:
        u, o = ours.get(i), oracle.get(i)
        if u is None or o is None:
            continue
        same["present"] += 1
        same["type"] += u["type"] == o["type"]
        same["bbox"] += np.array_equal(u["bbox"], o["bbox"])
        same["centroid"] += np.array_equal(u["centroid"], o["centroid"])
        same["contour"] += np.array_equal(u["contour"], o["contour"])
        same["type_prob"] += u["type_prob"] == o["type_prob"]
    n = len(ids)
    out = {f: (same[f] / n if n else 1.0) for f in FIELDS}
    out["cells"] = len(oracle)
    return out
