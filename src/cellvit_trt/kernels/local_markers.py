"""Marker clean-up (upstream `_proc_np_hv` step 6) without a pass over the whole tile's background.

- Hole filling (`scipy.ndimage.binary_fill_holes`, 4-connected background): a hole is a 4-connected set of
  non-marker pixels cut off from the tile border; what cuts it off is an 8-connected set of marker pixels
  (digital Jordan curve / Janiszewski: disjoint sets that separately enclose nothing do not together), and
  marker pixels lie in the foreground, so the holes of the tile are the union over 8-connected foreground
  groups G of the holes of (markers in G), and those lie in G's bounding box. `fill_groups` floods each box
  (grown by one pixel, whose rim is outside) from its rim, for the few groups whose markers could enclose
  anything at all (a row with a gap between two of their markers).
- The opening (`opening.py`) and the labelling then run on the whole tile, the labelling skipping
  empty 8-pixel words; the watershed seeds come from the opened markers' row runs.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from cellvit_trt.kernels.layout import _next_clear, _next_set
from cellvit_trt.kernels.morphology import _root

__all__ = ["fill_groups"]


@njit(nogil=True, cache=True)
def _groups_with_gaps(marker, labels, group, boxes, row_ptr, c0s, c1s):
    """Per group: does some row hold two of its marker pixels with a pixel that is not its marker between?
    Only then can its markers enclose a hole: a hole pixel has the group's markers left and right of it in
    its row (going straight left or right it would otherwise reach the rim)."""
    n_groups = boxes.shape[0]
    offset = np.zeros(n_groups + 1, np.int64)
    for g in range(n_groups):
        offset[g + 1] = offset[g] + boxes[g, 2] - boxes[g, 0]
    count = np.zeros(offset[n_groups], np.int64)
    lo = np.full(offset[n_groups], np.iinfo(np.int64).max, np.int64)
    hi = np.full(offset[n_groups], -1, np.int64)
    for r in range(labels.shape[0]):
        for i in range(row_ptr[r], row_ptr[r + 1]):
            g = group[labels[r, c0s[i]]] - 1  # a run lies in one component, so in one group
            if g < 0:
                continue
            mrow = marker[r, c0s[i] : c1s[i]]
            n = 0
            for c in range(mrow.shape[0]):  # counted in registers, vectorised; the arrays once per run
                n += mrow[c] != 0
            if n == 0:
                continue
            first = 0
            while mrow[first] == 0:
                first += 1
            last = mrow.shape[0] - 1
            while mrow[last] == 0:
                last -= 1
            row = offset[g] + r - boxes[g, 0]
            count[row] += n
            lo[row] = min(lo[row], c0s[i] + first)
            hi[row] = max(hi[row], c0s[i] + last)
    gaps = np.zeros(n_groups, np.bool_)
    for g in range(n_groups):
        for row in range(offset[g], offset[g + 1]):
            if count[row] > 0 and count[row] < hi[row] - lo[row] + 1:
                gaps[g] = True
                break
    return gaps


@njit(nogil=True, cache=True)
def fill_groups(marker, labels, group, boxes, row_ptr, c0s, c1s, filled):
    """filled (a copy of `marker`) |= holes, group by group (see module doc). `labels` the foreground
    components, `group[label]` their 8-connected group (1-based), `boxes` the groups' (r0, c0, r1, c1), and
    the row runs of a map covering the foreground. Only groups whose markers leave a gap in some row are
    flooded."""
    h, w = marker.shape
    gaps = _groups_with_gaps(marker, labels, group, boxes, row_ptr, c0s, c1s)
    biggest = 0
    for g in range(boxes.shape[0]):
        if gaps[g]:
            bh = min(boxes[g, 2] + 1, h) - max(boxes[g, 0] - 1, 0)
            bw = min(boxes[g, 3] + 1, w) - max(boxes[g, 1] - 1, 0)
            biggest = max(biggest, bh * bw)
    # per box: the row runs of non-barrier pixels (barrier: this group's markers), joined 4-connected with
    # union-find; runs in a component that reaches the box's rim are outside, the others are holes
    flat = marker.reshape(-1)
    words = flat[: flat.shape[0] // 8 * 8].view(np.uint64)
    parent = np.empty(biggest, np.int64)
    rs = np.empty(biggest, np.int64)
    re = np.empty(biggest, np.int64)
    rrow = np.empty(biggest, np.int64)
    rim = np.empty(biggest, np.bool_)
    outside = np.empty(biggest, np.bool_)
    for g in range(boxes.shape[0]):
        if not gaps[g]:
            continue
        r0 = max(boxes[g, 0] - 1, 0)
        c0 = max(boxes[g, 1] - 1, 0)
        r1 = min(boxes[g, 2] + 1, h)
        c1 = min(boxes[g, 3] + 1, w)
        bh = r1 - r0
        bw = c1 - c0
        me = g + 1
        n = 0
        prev_lo = 0
        prev_hi = 0
        for r in range(bh):
            lrow = labels[r0 + r, c0:c1]
            base = (r0 + r) * w + c0  # flat index of the box row's first pixel
            end = base + bw
            cur_lo = n
            c = 0
            # A row run of marker pixels lies in one component (its pixels are 4-adjacent foreground), so in
            # one group: runs are skipped whole (word scans), the group read once per run.
            while c < bw:
                if flat[base + c] != 0 and group[lrow[c]] == me:
                    c = _next_clear(flat, words, base + c, end) - base
                    continue
                s = c
                while c < bw:
                    if flat[base + c] == 0:
                        c = _next_set(flat, words, base + c, end) - base
                    elif group[lrow[c]] == me:
                        break
                    else:  # another group's markers: not a barrier here
                        c = _next_clear(flat, words, base + c, end) - base
                rs[n] = s
                re[n] = c
                rrow[n] = r
                parent[n] = n
                rim[n] = r == 0 or r == bh - 1 or s == 0 or c == bw
                outside[n] = False
                for j in range(prev_lo, prev_hi):  # columns overlap: 4-connected
                    if rs[j] < c and s < re[j]:
                        x = _root(parent, j)
                        y = _root(parent, n)
                        if x != y:
                            parent[max(x, y)] = min(x, y)
                n += 1
            prev_lo = cur_lo
            prev_hi = n
        for i in range(n):
            if rim[i]:
                outside[_root(parent, i)] = True
        for i in range(n):
            if not outside[_root(parent, i)]:
                filled[r0 + rrow[i], c0 + rs[i] : c0 + re[i]] = 1
