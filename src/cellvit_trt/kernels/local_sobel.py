"""Upstream's Sobel step evaluated in foreground blocks only, with the tile-wide extremes still exact.

Upstream computes `cv2.Sobel(normalize(hv), CV_64F, ksize)` on the whole tile and min-max normalises the
result over the whole tile. Inside the foreground the relief needs the Sobel values themselves; elsewhere only
their minimum and maximum matter. So:

1. `exact_runs` runs `sobel.row_filter` / `sobel.column_filter` (the bits of the whole-tile filter) at the
   foreground pixels: the column pass on the foreground runs of each row, the row pass where those read it
   (each row segment once, in a ring of rows). It returns the extremes found there.
2. `extremes` bounds the filter everywhere else from a float32 row pass, and lists the pixels that could
   beat those extremes (usually none);
3. `exact_at` evaluates those pixels exactly.
The normalised HV value is recomputed where the row pass reads it, with OpenCV's fused multiply-add.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from cellvit_trt.kernels.column21 import columns21_pair_at, window22
from cellvit_trt.kernels.fp import fma32, fma64, max64, min64, reflect101
from cellvit_trt.kernels.halfs import as_f32
from cellvit_trt.kernels.layout import _next_clear, _next_set, _round8, whole_rows
from cellvit_trt.kernels.prefetch import AHEAD, prefetch_runs
from cellvit_trt.kernels.sobel import (
    PAD,
    column_filter,
    column_filter_pair,
    pair_rows,
    row_filter,
    window_rows,
)

__all__ = ["row_pass_segments", "exact_runs", "exact_at", "pad_normalised", "seg_minmax"]


@njit(nogil=True, cache=True)
def pad_normalised(src_row, c0, c1, ar, scale32, shift32, pad):
    """pad[j] = normalise(src_row[reflect(c0 - ar + j)]) as float64, for j in [0, c1 - c0 + 2 ar); src_row
    float32, or float16 as uint16 bits (`halfs.as_f32`)."""
    w = src_row.shape[0]
    n = c1 - c0 + 2 * ar
    lo = max(0, ar - c0)
    hi = min(n, w - c0 + ar)
    for j in range(lo):
        pad[j] = np.float64(fma32(as_f32(src_row[reflect101(c0 - ar + j, w)]), scale32, shift32))
    inner = src_row[c0 - ar + lo : c0 - ar + hi]
    dst = pad[lo:hi]
    for j in range(hi - lo):
        dst[j] = np.float64(fma32(as_f32(inner[j]), scale32, shift32))
    for j in range(hi, n):
        pad[j] = np.float64(fma32(as_f32(src_row[reflect101(c0 - ar + j, w)]), scale32, shift32))


#: Column gaps shorter than this between row-pass segments are computed too (cheaper than a new segment).
_MERGE_GAP = 64


@njit(nogil=True, cache=True)
def row_pass_segments(binary, row_ptr, c0s, c1s, ac):
    """Where each tile row's row pass is read: the columns holding a pixel of `binary` (whose row runs are
    given) within ac rows. Returns (seg_ptr int64[H+1], s0, s1): row t's segments are [s0, s1) for
    seg_ptr[t] <= i < seg_ptr[t+1], gaps under _MERGE_GAP closed, widths rounded to 8, one whole row where
    half of it is needed. Computed once per tile, shared by both HV channels."""
    h, w = binary.shape
    seg_ptr = np.zeros(h + 1, np.int64)
    if whole_rows(row_ptr, c0s, c1s, w):  # the whole tile: every row whole, no sliding count
        for t in range(h):
            seg_ptr[t + 1] = t + 1
        return seg_ptr, np.zeros(h, np.int64), np.full(h, w, np.int64)
    cnt = np.zeros(w + 8, np.uint8)  # pixels of `binary` per column within [t - ac, t + ac] (< 256)
    words = cnt[: (w + 8) // 8 * 8].view(np.uint64)
    s0 = np.empty(1024, np.int64)
    s1 = np.empty(1024, np.int64)
    n = 0
    for r in range(min(h, ac)):
        if row_ptr[r + 1] > row_ptr[r]:
            row = binary[r]
            for c in range(w):
                cnt[c] += row[c]
    for t in range(h):
        if t + ac < h and row_ptr[t + ac + 1] > row_ptr[t + ac]:
            row = binary[t + ac]
            for c in range(w):
                cnt[c] += row[c]
        if t - ac - 1 >= 0 and row_ptr[t - ac] > row_ptr[t - ac - 1]:
            row = binary[t - ac - 1]
            for c in range(w):
                cnt[c] -= row[c]
        if s0.shape[0] - n < w // 8 + 2:  # room for this row's segments
            g0 = np.empty(2 * s0.shape[0] + w, np.int64)
            g1 = np.empty(2 * s0.shape[0] + w, np.int64)
            g0[:n] = s0[:n]
            g1[:n] = s1[:n]
            s0 = g0
            s1 = g1
        c = _next_set(cnt, words, 0, w)
        n_need = 0
        while c < w:
            e = _next_clear(cnt, words, c, w)
            n_need += e - c
            c = _next_set(cnt, words, e, w)
        if 2 * n_need >= w:  # mostly needed: one segment costs less than many
            s0[n] = 0
            s1[n] = w
            n += 1
        elif n_need > 0:
            c = _next_set(cnt, words, 0, w)
            while c < w:
                e = _next_clear(cnt, words, c, w)
                nxt = _next_set(cnt, words, e, w)
                while nxt < w and nxt - e < _MERGE_GAP:
                    e = _next_clear(cnt, words, nxt, w)
                    nxt = _next_set(cnt, words, e, w)
                c, e = _round8(c, e, w)
                s0[n] = c
                s1[n] = e
                n += 1
                c = max(nxt, e)
        seg_ptr[t + 1] = n
    return seg_ptr, s0[:n], s1[:n]


@njit(nogil=True, cache=True, inline="always")
def seg_minmax(seg, lo, hi):
    """(min(lo, seg.min()), max(hi, seg.max())) for finite values: llvm.minnum / maxnum reductions, which
    LLVM vectorises (Python's min / max, lanes kept in arrays or fastmath selects do not: 4x slower)."""
    for i in range(seg.shape[0]):
        v = seg[i]
        lo = min64(lo, v)
        hi = max64(hi, v)
    return lo, hi


@njit(nogil=True, cache=True, inline="always")
def _same_runs(row_ptr, c0s, c1s, r):
    """Rows r and r + 1 both exist and have the same runs (at least one)."""
    if r + 2 >= row_ptr.shape[0]:
        return False
    a, b = row_ptr[r], row_ptr[r + 1]
    if b == a or row_ptr[r + 2] - b != b - a:
        return False
    for i in range(b - a):
        if c0s[a + i] != c0s[b + i] or c1s[a + i] != c1s[b + i]:
            return False
    return True


@njit(nogil=True, cache=True)
def exact_runs(src, scale32, shift32, kx, ky, symmetric, seg_ptr, s0, s1, row_ptr, c0s, c1s, out):
    """Sobel of normalise(src) at the pixels of the given row runs, into `out` (on paired rows also in the
    gaps under _MERGE_GAP between runs: exact values too, counted in the extremes); (seg_ptr, s0, s1) where
    each row's row pass is read (`row_pass_segments` of a map whose runs these are).

    One streaming pass: the row pass of tile row t goes into a ring of 2 ac + 2 rows (cache-resident) on
    its segments; each output row's runs get their column pass once the rows below it are in, two adjacent
    rows with the same runs in one pass (`sobel.column_filter_pair`). Returns (min, max) over the pixels
    computed (+inf, -inf if none)."""
    h, w = src.shape
    ar = kx.shape[0] // 2
    ac = ky.shape[0] // 2
    n_ring = 2 * ac + 2
    ring = np.empty((n_ring, w + PAD), np.float64)  # padded rows: see sobel.PAD
    pad = np.empty(w + 2 * ar, np.float64)
    rows = np.empty(n_ring, np.int64)
    lo = np.inf
    hi = -np.inf
    nxt = 0
    r = 0
    while r < h:
        pair = _same_runs(row_ptr, c0s, c1s, r) and pair_rows(r, h, ac, n_ring, rows)
        last = min(r + ac + (1 if pair else 0), h - 1)  # rows reflected below the tile are in the ring
        while nxt <= last:
            prefetch_runs(src, nxt + AHEAD, seg_ptr, s0, s1, ar, False)
            dst = ring[nxt % n_ring]
            for i in range(seg_ptr[nxt], seg_ptr[nxt + 1]):
                c = s0[i]
                e = s1[i]
                pad_normalised(src[nxt], c, e, ar, scale32, shift32, pad)  # same values as a whole-row pad
                row_filter(pad, kx, dst[c:e])
            nxt += 1
        prefetch_runs(out, r + AHEAD, row_ptr, c0s, c1s, 0, True)
        if pair:
            prefetch_runs(out, r + AHEAD + 1, row_ptr, c0s, c1s, 0, True)
            whole = row_ptr[r + 1] - row_ptr[r] == 1 and c0s[row_ptr[r]] == 0 and c1s[row_ptr[r]] == w
            # x40 on runs: the window's 22 row views made once for all of a row pair's runs, not per run (the
            # sparse tile's exact Sobel -17 %, in one process); whole rows keep the sliced form (the "2x
            # slower" offset form measured there was the signed index, `columns21_pair_at`; both now within
            # the noise of recompiling the same code)
            if ac == 10 and not whole:
                b = window22(ring, rows, w)
                i = row_ptr[r]
                while i < row_ptr[r + 1]:
                    c0 = c0s[i]
                    c1 = c1s[i]
                    i += 1
                    # runs closer than _MERGE_GAP in one span: every window row's row pass covers their gap
                    # (`row_pass_segments` closes it), so the gap gets exact values too, and a long span
                    # vectorises where short runs do not (under 24 px the loop is scalar, ~4 ns per pixel)
                    while i < row_ptr[r + 1] and c0s[i] - c1 < _MERGE_GAP:
                        c1 = c1s[i]
                        i += 1
                    columns21_pair_at(b, c0, c1, ky, symmetric, out[r], out[r + 1])
                    lo, hi = seg_minmax(out[r, c0:c1], lo, hi)
                    lo, hi = seg_minmax(out[r + 1, c0:c1], lo, hi)
                r += 2
                continue
            for i in range(row_ptr[r], row_ptr[r + 1]):
                c0 = c0s[i]
                c1 = c1s[i]
                seg = out[r, c0:c1]
                below = out[r + 1, c0:c1]
                column_filter_pair(ring, rows, c0, c1, ky, symmetric, seg, below)
                lo, hi = seg_minmax(seg, lo, hi)
                lo, hi = seg_minmax(below, lo, hi)
            r += 2
            continue
        if row_ptr[r + 1] > row_ptr[r]:
            window_rows(r, h, ac, n_ring, rows)
            for i in range(row_ptr[r], row_ptr[r + 1]):
                c0 = c0s[i]
                c1 = c1s[i]
                seg = out[r, c0:c1]
                column_filter(ring, rows, c0, c1, ky, symmetric, seg)
                lo, hi = seg_minmax(seg, lo, hi)
        r += 1
    return lo, hi


@njit(nogil=True, cache=True)
def exact_at(src, scale32, shift32, kx, ky, symmetric, r, c):
    """The Sobel of normalise(src) at one pixel, bit for bit what `exact_runs` (and cv2) compute there."""
    h, w = src.shape
    ar = kx.shape[0] // 2
    ac = ky.shape[0] // 2
    pad = np.empty(1 + 2 * ar, np.float64)
    one = np.empty(1, np.float64)
    vals = np.empty(2 * ac + 1, np.float64)
    for j in range(2 * ac + 1):
        t = reflect101(r - ac + j, h)
        pad_normalised(src[t], c, c + 1, ar, scale32, shift32, pad)
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
