"""Per-instance measurements in one pass (replaces upstream's O(N*H*W) per-instance loops).

Reproduces `remap_label` plus `_create_single_instance_entry` of cellvit==1.0.9 field for field:

- ids: watershed labels renumbered 1..N in ascending order (= raster order of each marker's first pixel);
- bbox: (rmin, cmin, rmax+1, cmax+1);
- centroid: cv2.moments of the 0/1 uint8 bbox crop gives exact integer m10/m01, so
  x = (sum(col - cmin) / area) + cmin in float64, the same operations upstream performs;
- type: majority of type_map over the instance pixels; ties go to the lower type id (np.unique is
  ascending and the sort on counts is stable); if the winner is background (0) and another type occurs,
  the runner-up (highest count among the other types, lower id on ties) is taken;
- type_prob: count(type) / (area + 1e-6), a pixel fraction as upstream.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from cellvit_trt.kernels.pieces import one_piece

__all__ = ["measure_instances", "measure_runs", "measure_runs_into", "measure_present_into"]


@njit(nogil=True, cache=True)
def measure_instances(labels: np.ndarray, type_map: np.ndarray, n_types: int, cut: np.ndarray):
    """Renumber and measure: (inst_map int32, bbox int32[N,4], area int64[N], m10 int64[N], m01 int64[N],
    type int16[N], type_count int64[N], first_x int64[N], first_y int64[N], split bool[N]).

    `cut[raw_label]` marks watershed labels whose marker was cut by the mask: only their instances can be
    in several 8-connected pieces, and `split` says which are (found in the same pass). (first_x, first_y)
    is each instance's first pixel in raster order, where OpenCV starts its outer border.
    Visits the whole tile (`measure_runs` visits given runs); `n_types` is kept for callers (the type vote
    only sees the classes present).
    """
    h, w = labels.shape
    return measure_runs(
        labels, np.arange(h + 1), np.zeros(h, np.int64), np.full(h, w, np.int64), type_map, cut
    )


@njit(nogil=True, cache=True)
def _finish(inst, bbox, area, sum_c, sum_r, counts, first_x, first_y, split):
    """Exclusive bbox ends, bbox-relative first moments and the type vote (see the module doc)."""
    n = area.shape[0]
    n_types = counts.shape[1]
    m10 = np.empty(n, np.int64)
    m01 = np.empty(n, np.int64)
    cell_type = np.zeros(n, np.int16)
    type_count = np.zeros(n, np.int64)
    for i in range(n):
        bbox[i, 2] += 1
        bbox[i, 3] += 1
        m10[i] = sum_c[i] - area[i] * bbox[i, 1]
        m01[i] = sum_r[i] - area[i] * bbox[i, 0]
        best = 0
        for t in range(1, n_types):
            if counts[i, t] > counts[i, best]:
                best = t
        if best == 0:
            second = -1
            for t in range(1, n_types):
                if counts[i, t] > 0 and (second < 0 or counts[i, t] > counts[i, second]):
                    second = t
            if second > 0:
                best = second
        cell_type[i] = best
        type_count[i] = counts[i, best]
    return inst, bbox, area, m10, m01, cell_type, type_count, first_x, first_y, split


@njit(nogil=True, cache=True)
def measure_runs(labels, row_ptr, c0s, c1s, type_map, cut):
    """`measure_instances` for labels that are nonzero only on the row runs (`layout.row_runs` of a map
    covering the foreground): visits those pixels only, in raster order, into a fresh instance map."""
    return measure_runs_into(labels, row_ptr, c0s, c1s, type_map, cut, np.zeros(labels.shape, np.int32))


@njit(nogil=True, cache=True)
def measure_runs_into(labels, row_ptr, c0s, c1s, type_map, cut, inst):
    """`measure_runs` writing the instance map into `inst` (zero off the runs), which may be `labels`
    itself: each run pixel is read once before it is written."""
    max_label = cut.shape[0] - 1  # watershed labels are marker labels; cut has a flag per marker label
    present = np.zeros(max_label + 1, np.bool_)
    for r in range(labels.shape[0]):
        for k in range(row_ptr[r], row_ptr[r + 1]):
            lrow = labels[r, c0s[k] : c1s[k]]
            prev = -1
            for i in range(lrow.shape[0]):
                if lrow[i] != prev:
                    prev = lrow[i]
                    present[prev] = True
    return measure_present_into(labels, row_ptr, c0s, c1s, type_map, cut, inst, present)


@njit(nogil=True, cache=True)
def _settle(inst, split, bbox, area) -> None:
    """split[i] stays True only for the flagged instances in several 8-connected pieces, checked on the
    renumbered map `inst` (bbox still inclusive here)."""
    room = 1
    for i in range(split.shape[0]):
        if split[i]:
            room = max(room, area[i])
    parent = np.empty(room, np.int64)
    rs = np.empty(room, np.int64)
    re = np.empty(room, np.int64)
    for i in range(split.shape[0]):
        if split[i]:
            r0, c0, r1, c1 = bbox[i, 0], bbox[i, 1], bbox[i, 2] + 1, bbox[i, 3] + 1
            split[i] = not one_piece(inst, i + 1, r0, c0, r1, c1, parent, rs, re)


@njit(nogil=True, cache=True)
def measure_present_into(labels, row_ptr, c0s, c1s, type_map, cut, inst, present):
    """`measure_runs_into` given present[label]: True exactly for the labels on the runs (the watershed's
    seeded marker labels, `watershed.seeds_from_runs`: finding them here is a branchy pass over every
    foreground pixel, a third of this function's time)."""
    h, w = labels.shape
    max_label = cut.shape[0] - 1
    t_any = np.uint8(0)  # the OR of the types bounds their max; unused classes' zero counts never win
    for r in range(h):
        for k in range(row_ptr[r], row_ptr[r + 1]):
            trow = type_map[r, c0s[k] : c1s[k]]
            for i in range(trow.shape[0]):
                t_any |= trow[i]
    n_types = np.int64(t_any) + 1
    remap = np.zeros(max_label + 1, np.int32)
    n = 0
    for lab in range(1, max_label + 1):
        if present[lab]:
            n += 1
            remap[lab] = n
    bbox = np.empty((n, 4), np.int32)
    bbox[:, 0] = h
    bbox[:, 1] = w
    bbox[:, 2] = -1
    bbox[:, 3] = -1
    area = np.zeros(n, np.int64)
    sum_c = np.zeros(n, np.int64)
    sum_r = np.zeros(n, np.int64)
    counts = np.zeros((n, n_types), np.int64)
    first_x = np.zeros(n, np.int64)
    first_y = np.zeros(n, np.int64)
    split = np.zeros(n, np.bool_)
    for lab in range(1, max_label + 1):
        if present[lab]:
            split[remap[lab] - 1] = lab < cut.shape[0] and cut[lab]
    for r in range(h):
        lrow = labels[r]
        trow = type_map[r]
        irow = inst[r]
        for k in range(row_ptr[r], row_ptr[r + 1]):
            c = c0s[k]
            c1 = c1s[k]
            while c < c1:  # one segment of equal labels at a time: integer sums, so any grouping is exact
                lab = lrow[c]
                e = c + 1
                while e < c1 and lrow[e] == lab:
                    e += 1
                kk = remap[lab]
                irow[c:e] = kk
                if kk != 0:
                    i = kk - 1
                    if area[i] == 0:
                        first_x[i] = c
                        first_y[i] = r
                        bbox[i, 0] = r
                    n_px = e - c
                    area[i] += n_px
                    sum_c[i] += (c + e - 1) * n_px // 2
                    sum_r[i] += r * n_px
                    for j in range(c, e):
                        counts[i, trow[j]] += 1
                    if c < bbox[i, 1]:
                        bbox[i, 1] = c
                    bbox[i, 2] = r
                    if e - 1 > bbox[i, 3]:
                        bbox[i, 3] = e - 1
                c = e
    _settle(inst, split, bbox, area)
    return _finish(inst, bbox, area, sum_c, sum_r, counts, first_x, first_y, split)
