"""First OpenCV contour of each instance, traced in Numba (cv2.findContours RETR_TREE, CHAIN_APPROX_SIMPLE).

For an instance that is one 8-connected component, `findContours(crop)[0][0]` is the outer border found at
the instance's first pixel in raster order, followed by Suzuki-Abe border following: the first neighbour is
searched clockwise starting up-left, each next one counter-clockwise from the direction after the one we came
from, and CHAIN_APPROX_SIMPLE keeps a pixel only where the chain code changes. Tracing on the tile with
"== id" equals tracing on the zero-padded bbox crop, because every pixel of the instance lies inside its bbox.

Instances in several 8-connected pieces (found by the measure pass, `cells.py`) are left to
cv2.findContours by the caller.
`tests/kernels/test_building_blocks.py` checks equality with cv2 on random shapes, holes included.
"""

from __future__ import annotations

import numpy as np
from numba import njit

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
def _trace_all(inst, labels, first_x, first_y, skip, capacity):
    out = np.empty((capacity, 2), np.int32)
    offsets = np.zeros(labels.shape[0] + 1, np.int64)
    n = 0
    for k in range(labels.shape[0]):
        if skip[k]:
            offsets[k + 1] = n
            continue
        while True:
            got = _trace(inst, labels[k], first_x[k], first_y[k], _DX, _DY, out, n)
            if got >= 0:
                break
            bigger = np.empty((out.shape[0] * 2, 2), np.int32)
            bigger[:n] = out[:n]
            out = bigger
        n += got
        offsets[k + 1] = n
    return out[:n], offsets


def trace_first_contours(inst, labels, first_x, first_y, skip=None):
    """(points int32 [P, 2] (x, y), offsets int64 [K+1]): the first OpenCV contour of each given label,
    traced from its first pixel. Labels flagged in `skip` (instances in several 8-connected pieces,
    `cells.measure_instances`' split) get an empty entry: OpenCV's choice of first contour among pieces is
    left to OpenCV."""
    k = int(labels.shape[0])
    if skip is None:
        skip = np.zeros(k, np.bool_)
    capacity = max(1024, 64 * k)
    return _trace_all(
        inst,
        labels.astype(np.int32),
        first_x.astype(np.int64),
        first_y.astype(np.int64),
        np.ascontiguousarray(skip, dtype=np.bool_),
        capacity,
    )
