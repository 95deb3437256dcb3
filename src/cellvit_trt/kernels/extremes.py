"""Pixels outside the foreground blocks whose Sobel value could reach the tile-wide extremes.

Upstream min-max normalises the Sobel response over the whole tile, so the background's extremes count even
though its values do not. `approx_candidates` runs the same separable filter in float32 on the raw HV channel
(a streaming pass: row filter into a ring of 2*ac+1 rows, column filter per row, nothing stored), and lists
the pixels outside the exact blocks whose approximate value lies within `eps` of the extremes found so far.

Why that is exact. Let S be the filter in real arithmetic and s the float64 value upstream computes from
h' = fl32(scale*h + shift) (one fused multiply-add). Since the taps sum to zero along the derivative axis,
S(h') = scale*S(h) + S(d) with |d| <= u32*max|h'|, so with W = sum|kx| * sum|ky|:
    |s - scale*S(h)| <= W*(u32*max|h'| + 64*u64*max|h'|)    (normalisation, float64 sums)
    |a - S(h)|       <= 128*u32*W*max|h|                      (the float32 pass, any summation order)
for the float32 value a; `error_bound` adds these with a factor 2 margin. A pixel whose exact value exceeds
the current maximum therefore has scale*a >= max - eps, and is listed. `local_sobel.exact_at` then computes
the listed pixels exactly. Too many candidates (a flat map) returns -1 and the caller computes every block.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from cellvit_trt.kernels.fp import reflect101

__all__ = ["approx_candidates", "error_bound"]

_U32 = 2.0**-24
_U64 = 2.0**-53


def error_bound(kx: np.ndarray, ky: np.ndarray, scale: float, shift: float, abs_max: float) -> float:
    """eps (normalised units) bounding |exact Sobel - scale * float32 Sobel of the raw map| at any pixel."""
    weight = float(np.abs(kx).sum() * np.abs(ky).sum())
    hat_max = scale * abs_max + abs(shift) + 1.0  # bound on |normalised value|
    eps = weight * (scale * 128.0 * _U32 * abs_max + (_U32 + 64.0 * _U64) * hat_max)
    eps += weight * scale * 2.0**-120  # float32 underflow, absolute
    return 2.0 * eps


@njit(nogil=True, cache=True, fastmath=True)
def _row_smooth(pad, taps, out):
    a = taps.shape[0] - 1
    w = out.shape[0]
    f = taps[0]
    p0 = pad[a : a + w]
    for i in range(w):
        out[i] = f * p0[i]
    for k in range(1, a + 1):
        f = taps[k]
        p1 = pad[a + k : a + k + w]
        p2 = pad[a - k : a - k + w]
        for i in range(w):
            out[i] += f * (p1[i] + p2[i])


@njit(nogil=True, cache=True, fastmath=True)
def _row_deriv(pad, taps, out):
    a = taps.shape[0] - 1
    w = out.shape[0]
    for i in range(w):
        out[i] = 0.0
    for k in range(1, a + 1):
        f = taps[k]
        p1 = pad[a + k : a + k + w]
        p2 = pad[a - k : a - k + w]
        for i in range(w):
            out[i] += f * (p1[i] - p2[i])


@njit(nogil=True, cache=True, fastmath=True)
def _row_minmax(row):
    mx = row[0]
    mn = row[0]
    for i in range(row.shape[0]):
        mx = max(mx, row[i])
        mn = min(mn, row[i])
    return mn, mx


@njit(nogil=True, cache=True, fastmath=True)
def approx_candidates(src, row_taps, col_taps, row_deriv, thr_lo, thr_hi, active, bh, bw, out, cap):
    """Flat indices (into `out`, at most `cap`) of pixels outside `active` blocks whose float32 Sobel of `src`
    (raw units) is <= thr_lo or >= thr_hi; returns their count, or -1 if more than `cap`.

    row_taps / col_taps are the half kernels (centre first, float32); the derivative one is antisymmetric,
    the other symmetric; `row_deriv` says which pass differentiates (True for d/dx).
    """
    h, w = src.shape
    ar = row_taps.shape[0] - 1
    ac = col_taps.shape[0] - 1
    n_ring = 2 * ac + 1
    ring = np.empty((n_ring, w), np.float32)
    pad = np.empty(w + 2 * ar, np.float32)
    left = np.empty(ar, np.int64)
    right = np.empty(ar, np.int64)
    for j in range(ar):
        left[j] = reflect101(j - ar, w)
        right[j] = reflect101(w + j, w)
    row = np.empty(w, np.float32)
    n = 0
    nxt = 0
    for r in range(h):
        last = min(r + ac, h - 1)  # reflected rows below the tile are rows already in the ring
        while nxt <= last:
            s = src[nxt]
            mid = pad[ar : ar + w]
            for c in range(w):
                mid[c] = s[c]
            for j in range(ar):
                pad[j] = s[left[j]]
                pad[w + ar + j] = s[right[j]]
            if row_deriv:
                _row_deriv(pad, row_taps, ring[nxt % n_ring])
            else:
                _row_smooth(pad, row_taps, ring[nxt % n_ring])
            nxt += 1
        if row_deriv:  # column pass smooths
            f = col_taps[0]
            cen = ring[r % n_ring]
            for c in range(w):
                row[c] = f * cen[c]
            for k in range(1, ac + 1):
                f = col_taps[k]
                rd = ring[reflect101(r + k, h) % n_ring]
                ru = ring[reflect101(r - k, h) % n_ring]
                for c in range(w):
                    row[c] += f * (rd[c] + ru[c])
        else:  # column pass differentiates
            for c in range(w):
                row[c] = 0.0
            for k in range(1, ac + 1):
                f = col_taps[k]
                rd = ring[reflect101(r + k, h) % n_ring]
                ru = ring[reflect101(r - k, h) % n_ring]
                for c in range(w):
                    row[c] += f * (rd[c] - ru[c])
        mn, mx = _row_minmax(row)
        if mn > thr_lo and mx < thr_hi:
            continue
        br = r // bh
        for c in range(w):
            v = row[c]
            if (v <= thr_lo or v >= thr_hi) and active[br, c // bw] == 0:
                if n == cap:
                    return -1
                out[n] = r * w + c
                n += 1
    return n
