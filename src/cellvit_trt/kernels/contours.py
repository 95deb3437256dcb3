"""First OpenCV contour of each instance, traced in Numba (cv2.findContours RETR_TREE, CHAIN_APPROX_SIMPLE).

For an instance that is one 8-connected component, `findContours(crop)[0][0]` is the outer border found at
the instance's first pixel in raster order, followed by Suzuki-Abe border following: the first neighbour is
searched clockwise starting up-left, each next one counter-clockwise from the direction after the one we came
from, and CHAIN_APPROX_SIMPLE keeps a pixel only where the chain code changes. Tracing on the tile with
"== id" equals tracing on the zero-padded bbox crop, because every pixel of the instance lies inside its bbox.

Instances that may be in pieces (their marker was cut by the foreground mask) are checked for
8-connectivity; those really in pieces are left to cv2.findContours by the caller.
`tests/kernels/test_building_blocks.py` checks equality with cv2 on random shapes, holes included.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from cellvit_trt.kernels.morphology import _root

__all__ = ["trace_first_contours"]

# chain codes 0..7 as in OpenCV: right, up-right, up, up-left, left, down-left, down, down-right
_DX = np.array([1, 1, 0, -1, -1, -1, 0, 1], np.int64)
_DY = np.array([0, -1, -1, -1, 0, 1, 1, 1], np.int64)


@njit(nogil=True, cache=True)
def _on(inst, lab, x, y):
    h, w = inst.shape
    return 0 <= x < w and 0 <= y < h and inst[y, x] == lab


@njit(nogil=True, cache=True)
def _trace(inst, lab, x0, y0, dx, dy, out, start):
    """Append the simple-chain outer border of `lab` starting at (x0, y0) to out[start:]; return the count."""
    n = start
    s = 4
    s_end = 4
    found = False
    while True:
        s = (s - 1) & 7
        if _on(inst, lab, x0 + dx[s], y0 + dy[s]):
            found = True
            break
        if s == s_end:
            break
    if not found:
        out[n, 0] = x0
        out[n, 1] = y0
        return 1
    x1 = x0 + dx[s]
    y1 = y0 + dy[s]
    x3 = x0
    y3 = y0
    prev_s = s ^ 4
    px = x0
    py = y0
    while True:
        s_end = s
        # counter-clockwise search from the direction after s (at most 8 steps; the pixel we came from is on)
        while True:
            s += 1
            if _on(inst, lab, x3 + dx[s & 7], y3 + dy[s & 7]):
                break
        s &= 7
        x4 = x3 + dx[s]
        y4 = y3 + dy[s]
        if s != prev_s:
            if n >= out.shape[0]:
                return -1
            out[n, 0] = px
            out[n, 1] = py
            n += 1
            prev_s = s
        px += dx[s]
        py += dy[s]
        if x4 == x0 and y4 == y0 and x3 == x1 and y3 == y1:
            break
        x3 = x4
        y3 = y4
        s = (s + 4) & 7
    return n - start


@njit(nogil=True, cache=True)
def _one_piece(inst, lab, r0, c0, r1, c1, parent, rs, re):
    """True if the pixels of `lab` inside its bbox form one 8-connected component: their row runs, joined
    with union-find where runs of consecutive rows overlap or touch diagonally. `parent`, `rs`, `re`:
    scratch with room for one entry per pixel of `lab`."""
    n = 0
    pieces = 0
    prev_lo = 0
    prev_hi = 0
    for r in range(r0, r1):
        row = inst[r]
        cur_lo = n
        c = c0
        while c < c1:
            if row[c] != lab:
                c += 1
                continue
            s = c
            while c < c1 and row[c] == lab:
                c += 1
            rs[n] = s
            re[n] = c
            parent[n] = n
            pieces += 1
            for j in range(prev_lo, prev_hi):  # [rs, re) and [s, c) 8-adjacent: rs <= c and s <= re
                if rs[j] <= c and s <= re[j]:
                    x = _root(parent, j)
                    y = _root(parent, n)
                    if x != y:
                        parent[max(x, y)] = min(x, y)
                        pieces -= 1
            n += 1
        prev_lo = cur_lo
        prev_hi = n
    return pieces == 1


@njit(nogil=True, cache=True)
def _trace_all(inst, labels, first_x, first_y, check, bbox, area, capacity):
    out = np.empty((capacity, 2), np.int32)
    offsets = np.zeros(labels.shape[0] + 1, np.int64)
    pieces = np.zeros(labels.shape[0], np.bool_)
    room = 1
    for k in range(labels.shape[0]):
        if check[k]:
            room = max(room, area[k])
    parent = np.empty(room, np.int64)
    rs = np.empty(room, np.int64)
    re = np.empty(room, np.int64)
    n = 0
    for k in range(labels.shape[0]):
        lab = labels[k]
        if check[k] and not _one_piece(
            inst, lab, bbox[k, 0], bbox[k, 1], bbox[k, 2], bbox[k, 3], parent, rs, re
        ):
            pieces[k] = True
            offsets[k + 1] = n
            continue
        while True:
            got = _trace(inst, lab, first_x[k], first_y[k], _DX, _DY, out, n)
            if got >= 0:
                break
            bigger = np.empty((out.shape[0] * 2, 2), np.int32)
            bigger[:n] = out[:n]
            out = bigger
        n += got
        offsets[k + 1] = n
    return out[:n], offsets, pieces


def trace_first_contours(inst, labels, first_x, first_y, check=None, bbox=None, area=None):
    """(points int32 [P, 2] (x, y), offsets int64 [K+1], in_pieces bool [K]) for the given labels.

    Labels flagged in `check` (instances that may be in pieces) are first tested for 8-connectivity inside
    their bbox (int [K, 4] = r0, c0, r1, c1; `area` their pixel counts); those in several pieces get an empty
    entry and `in_pieces` True: OpenCV's choice of first contour among pieces is left to OpenCV.
    """
    k = int(labels.shape[0])
    if check is None:
        check = np.zeros(k, np.bool_)
        bbox = np.zeros((k, 4), np.int64)
        area = np.zeros(k, np.int64)
    capacity = max(1024, 64 * k)
    return _trace_all(
        inst,
        labels.astype(np.int32),
        first_x.astype(np.int64),
        first_y.astype(np.int64),
        np.ascontiguousarray(check, dtype=np.bool_),
        np.ascontiguousarray(bbox, dtype=np.int64),
        np.ascontiguousarray(area, dtype=np.int64),
        capacity,
    )
