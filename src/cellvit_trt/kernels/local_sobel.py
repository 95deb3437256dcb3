"""Upstream's Sobel step evaluated in foreground blocks only, with the tile-wide extremes still exact.

Upstream computes `cv2.Sobel(normalize(hv), CV_64F, ksize)` on the whole tile and min-max normalises the
result over the whole tile. Inside the foreground the relief needs the Sobel values themselves; elsewhere only
their minimum and maximum matter. So:

1. `exact_blocks` runs `sobel.row_filter` / `sobel.column_filter` (the bits of the whole-tile filter) on the
   blocks that hold foreground: the row pass on the rows within the column reach of those blocks (each row
   segment once, kept in a tile-sized buffer), the column pass on the blocks. It returns the extremes found.
2. `extremes.approx_candidates` scans the rest of the tile with a float32 filter whose error is bounded, and
   lists the pixels that could beat those extremes (usually none);
3. `exact_at` evaluates those pixels exactly.
The normalised HV value is recomputed where the row pass reads it, with OpenCV's fused multiply-add.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from cellvit_trt.kernels.fp import fma32, fma64, reflect101
from cellvit_trt.kernels.sobel import column_filter, row_filter

__all__ = ["exact_blocks", "exact_at"]


@njit(nogil=True, cache=True)
def _pad_normalised(src_row, c0, c1, ar, scale32, shift32, pad):
    """pad[j] = normalise(src_row[reflect(c0 - ar + j)]) as float64, for j in [0, c1 - c0 + 2 ar)."""
    w = src_row.shape[0]
    n = c1 - c0 + 2 * ar
    lo = max(0, ar - c0)
    hi = min(n, w - c0 + ar)
    for j in range(lo):
        pad[j] = np.float64(fma32(src_row[reflect101(c0 - ar + j, w)], scale32, shift32))
    inner = src_row[c0 - ar + lo : c0 - ar + hi]
    dst = pad[lo:hi]
    for j in range(hi - lo):
        dst[j] = np.float64(fma32(inner[j], scale32, shift32))
    for j in range(hi, n):
        pad[j] = np.float64(fma32(src_row[reflect101(c0 - ar + j, w)], scale32, shift32))


@njit(nogil=True, cache=True)
def exact_blocks(src, scale32, shift32, kx, ky, symmetric, active, bh, bw, rowbuf, out):
    """Sobel of normalise(src) at every pixel of the active blocks, into `out` (float64 [H, W]).

    `rowbuf` (float64 [H, W]) receives the row pass where some active block's column pass reads it: on row t,
    the column blocks active in a band whose rows +- ac contain t (gaps of one block are filled in, which
    costs less than a separate segment). Returns (min, max) over the pixels computed (+inf, -inf if none)."""
    h, w = src.shape
    ar = kx.shape[0] // 2
    ac = ky.shape[0] // 2
    nbr, nbc = active.shape
    pad = np.empty(w + 2 * ar, np.float64)
    need = np.empty(nbc, np.uint8)
    for t in range(h):
        for bc in range(nbc):
            need[bc] = 0
        any_need = False
        for br in range(max(0, (t - ac - bh) // bh), min(nbr, (t + ac) // bh + 1)):
            if br * bh - ac <= t < br * bh + bh + ac:
                for bc in range(nbc):
                    if active[br, bc] != 0:
                        need[bc] = 1
                        any_need = True
        if not any_need:
            continue
        bc = 0
        while bc < nbc:
            if need[bc] == 0:
                bc += 1
                continue
            end = bc + 1
            while end < nbc and (need[end] != 0 or (end + 1 < nbc and need[end + 1] != 0)):
                end += 1
            c0 = bc * bw
            c1 = min(w, end * bw)
            _pad_normalised(src[t], c0, c1, ar, scale32, shift32, pad)
            row_filter(pad, kx, rowbuf[t, c0:c1])
            bc = end
    vmin = np.inf
    vmax = -np.inf
    for br in range(nbr):
        r0 = br * bh
        r1 = min(h, r0 + bh)
        bc = 0
        while bc < nbc:
            if active[br, bc] == 0:
                bc += 1
                continue
            end = bc + 1
            while end < nbc and active[br, end] != 0:
                end += 1
            c0 = bc * bw
            c1 = min(w, end * bw)
            for r in range(r0, r1):
                seg = out[r, c0:c1]
                column_filter(rowbuf, r, c0, c1, ky, symmetric, seg)
                for i in range(c1 - c0):
                    v = seg[i]
                    if v < vmin:
                        vmin = v
                    if v > vmax:
                        vmax = v
            bc = end
    return vmin, vmax


@njit(nogil=True, cache=True)
def exact_at(src, scale32, shift32, kx, ky, symmetric, r, c):
    """The Sobel of normalise(src) at one pixel, bit for bit what `exact_blocks` (and cv2) compute there."""
    h, w = src.shape
    ar = kx.shape[0] // 2
    ac = ky.shape[0] // 2
    pad = np.empty(1 + 2 * ar, np.float64)
    one = np.empty(1, np.float64)
    vals = np.empty(2 * ac + 1, np.float64)
    for j in range(2 * ac + 1):
        t = reflect101(r - ac + j, h)
        _pad_normalised(src[t], c, c + 1, ar, scale32, shift32, pad)
        row_filter(pad, kx, one)
        vals[j] = one[0]
    if symmetric:
        acc = ky[ac] * vals[ac] + 0.0
        for k in range(1, ac + 1):
            acc = fma64(ky[ac + k], vals[ac + k] + vals[ac - k], acc)
    else:
        acc = 0.0
        for k in range(1, ac + 1):
            acc = fma64(ky[ac + k], vals[ac + k] - vals[ac - k], acc)
    return acc
