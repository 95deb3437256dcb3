"""Pixels away from the foreground whose Sobel value could reach the tile-wide extremes.

Upstream min-max normalises the Sobel response over the whole tile, so the background's extremes count even
though its values do not. Computing the filter everywhere is what the region path avoids; instead:

1. `row_bounds`: the row pass in float32 on the raw HV channel (folded taps, vectorised), kept only as its
   max and min for each row and cell of `CELL` columns;
2. `cell_bounds`: the column pass applied to those maxima / minima bounds the filter on each (row, cell)
   segment: the smoothing column taps are positive, so sum_j g_j R(r+j) <= sum_j g_j max R(r+j); the
   derivative ones are antisymmetric, so sum_k d_k (R(r+k) - R(r-k)) <= sum_k d_k (max R(r+k) - min R(r-k));
3. `candidates`: on the rare segments whose bound reaches the extremes found at the foreground, the float32
   filter (row pass redone there) lists the pixels within `eps` of them; `local_sobel.exact_at` computes
   those exactly.

Why that is exact. Let S be the filter in real arithmetic and s the float64 value upstream computes from
h' = fl32(scale*h + shift) (one fused multiply-add). The taps sum to zero along the derivative axis, so
S(h') = scale*S(h) + S(d) with |d| <= u32*max|h'|; with W = sum|kx| * sum|ky|:
    |s - scale*S(h)|  <= W*(u32 + 64*u64)*max|h'|        (normalisation, float64 sums)
    |R32 - R|, |a - S(h)| <= 128*u32*W*max|h|            (float32 passes, any summation order)
for the float32 row pass R32 and filter value a; `error_bound` adds these with a factor 2 margin, so a pixel
whose exact value reaches the current maximum has scale*(bound of its segment) >= max - eps and
scale*a >= max - eps. Too many candidates (a flat map) returns -1; the caller then filters the whole tile.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from cellvit_trt.kernels.fp import max32, min32, reflect101
from cellvit_trt.kernels.halfs import as_f32

__all__ = ["CELL", "error_bound", "row_bounds", "cell_bounds", "candidates"]

#: Width of the column cells the row pass maxima are kept for.
CELL = 32

_U32 = 2.0**-24
_U64 = 2.0**-53


def error_bound(kx: np.ndarray, ky: np.ndarray, scale: float, shift: float, abs_max: float) -> float:
    """eps (normalised units) bounding |exact Sobel - scale * float32 Sobel of the raw map| at any pixel,
    and |true filter - its bound from float32 row maxima| beyond the bound itself."""
    weight = float(np.abs(kx).sum() * np.abs(ky).sum())
    hat_max = scale * abs_max + abs(shift) + 1.0  # bound on |normalised value|
    eps = weight * (scale * 128.0 * _U32 * abs_max + (_U32 + 64.0 * _U64) * hat_max)
    eps += weight * scale * 2.0**-120  # float32 underflow, absolute
    return 2.0 * eps


@njit(nogil=True, cache=True, fastmath=True, inline="always")
def _tap_sum(pad, taps, p, a, deriv):
    """sum_k taps[k] * (pad[p+k] -/+ pad[p-k]) (+ taps[0] * pad[p] when smoothing): the row pass at pad[p]."""
    if deriv:
        acc = np.float32(0.0)
    else:
        acc = taps[0] * pad[p]
    for k in range(1, a + 1):
        if deriv:
            acc += taps[k] * (pad[p + k] - pad[p - k])
        else:
            acc += taps[k] * (pad[p + k] + pad[p - k])
    return acc


@njit(nogil=True, cache=True, fastmath=True, inline="always")
def _fold(pad, taps, out, a, deriv):
    """out[i] = the row pass at pad[a + i] (`_tap_sum`)."""
    for i in range(out.shape[0]):
        out[i] = _tap_sum(pad, taps, a + i, a, deriv)


@njit(nogil=True, cache=True, fastmath=True)
def _row_pass(pad, taps, out, deriv):
    a = taps.shape[0] - 1
    if a == 10:  # x40: tap loop unrolled, pixel loop vectorised
        _fold(pad, taps, out, 10, deriv)
    elif a == 5:  # x20
        _fold(pad, taps, out, 5, deriv)
    else:
        _fold(pad, taps, out, a, deriv)


@njit(nogil=True, cache=True, fastmath=True)
def _padded(src_row, c0, c1, a, pad):
    """pad[j] = src_row[reflect(c0 - a + j)], j in [0, c1 - c0 + 2a), as float32 (`halfs.as_f32`)."""
    w = src_row.shape[0]
    n = c1 - c0 + 2 * a
    lo = max(0, a - c0)
    hi = min(n, w - c0 + a)
    for j in range(lo):
        pad[j] = as_f32(src_row[reflect101(c0 - a + j, w)])
    inner = src_row[c0 - a + lo : c0 - a + hi]
    dst = pad[lo:hi]
    for j in range(hi - lo):
        dst[j] = as_f32(inner[j])
    for j in range(hi, n):
        pad[j] = as_f32(src_row[reflect101(c0 - a + j, w)])


@njit(nogil=True, cache=True, fastmath=True, inline="always")
def _cell_extremes(pad, taps, c0, m, a, deriv):
    """(max, min) of the row pass (`_tap_sum`) on columns [c0, c0 + m) of the row padded whole into `pad`,
    without storing it; m and a are compile-time constants where the caller passes literals."""
    mx = np.float32(-np.inf)
    mn = np.float32(np.inf)
    for i in range(m):
        acc = _tap_sum(pad, taps, c0 + a + i, a, deriv)
        mx = max32(mx, acc)
        mn = min32(mn, acc)
    return mx, mn


@njit(nogil=True, cache=True, fastmath=True, inline="always")
def _row_extremes(pad, taps, cmax_row, cmin_row, w, a, deriv):
    """`_cell_extremes` of every CELL-column cell of one padded row: full cells with a constant trip count
    (one pass, the row pass never stored: 0.79 -> 0.66 ms per 1024 x 1024 channel, in one process)."""
    full = w // CELL
    for cb in range(full):
        cmax_row[cb], cmin_row[cb] = _cell_extremes(pad, taps, cb * CELL, CELL, a, deriv)
    if full < cmax_row.shape[0]:
        cmax_row[full], cmin_row[full] = _cell_extremes(pad, taps, full * CELL, w - full * CELL, a, deriv)


@njit(nogil=True, cache=True, fastmath=True)
def row_bounds(src, row_taps, row_deriv, cmax, cmin):
    """Float32 row pass of `src`, kept only as its max / min per row and CELL-column cell (cmax / cmin,
    [H, ceil(W / CELL)]). row_taps: the half kernel, centre first."""
    h, w = src.shape
    a = row_taps.shape[0] - 1
    pad = np.empty(w + 2 * a, np.float32)
    for t in range(h):
        _padded(src[t], 0, w, a, pad)
        # the tap count and the filter's kind as constants: the tap loop unrolls, the pixel loop vectorises
        if a == 10 and row_deriv:  # x40
            _row_extremes(pad, row_taps, cmax[t], cmin[t], w, 10, True)
        elif a == 10:
            _row_extremes(pad, row_taps, cmax[t], cmin[t], w, 10, False)
        elif a == 5 and row_deriv:  # x20
            _row_extremes(pad, row_taps, cmax[t], cmin[t], w, 5, True)
        elif a == 5:
            _row_extremes(pad, row_taps, cmax[t], cmin[t], w, 5, False)
        else:
            _row_extremes(pad, row_taps, cmax[t], cmin[t], w, a, row_deriv)


@njit(nogil=True, cache=True)
def cell_bounds(cmax, cmin, col_taps, col_deriv, hi, lo):
    """Upper / lower bounds (float64, raw units) of the filter on every (row, cell) segment, from the row
    pass maxima and minima (module doc, step 2); rows reflected as the filter reflects them. The maxima are
    widened to float64 once and the signed weights set up once, not in each of a window's 2 a + 1 rows."""
    h, nc = cmax.shape
    a = col_taps.shape[0] - 1
    mx64 = np.empty((h, nc), np.float64)
    mn64 = np.empty((h, nc), np.float64)
    for r in range(h):
        for cb in range(nc):
            mx64[r, cb] = cmax[r, cb]
            mn64[r, cb] = cmin[r, cb]
    g = np.empty(2 * a + 1, np.float64)  # weight of R(r + k) in the filter, at k + a
    for k in range(-a, a + 1):
        g[k + a] = -col_taps[-k] if col_deriv and k < 0 else col_taps[abs(k)]
    if h > 2 * a and _usual_signs(g, a, col_deriv) and (a == 10 or a == 5):
        if a == 10 and col_deriv:  # x40; the window's size and signs as constants, so the tap loop unrolls
            _interior(mx64, mn64, g, hi, lo, 10, True)
        elif a == 10:
            _interior(mx64, mn64, g, hi, lo, 10, False)
        elif col_deriv:  # x20
            _interior(mx64, mn64, g, hi, lo, 5, True)
        else:
            _interior(mx64, mn64, g, hi, lo, 5, False)
        _rows(mx64, mn64, g, col_deriv, hi, lo, 0, a)
        _rows(mx64, mn64, g, col_deriv, hi, lo, h - a, h)
    else:
        _rows(mx64, mn64, g, col_deriv, hi, lo, 0, h)


@njit(nogil=True, cache=True, inline="always")
def _usual_signs(g, a, deriv):
    """The weights' signs are those of a smoothing (all >= 0) or derivative (< 0 above the centre) window."""
    for j in range(2 * a + 1):
        if deriv and j < a:
            if not g[j] < 0.0:
                return False
        elif not g[j] >= 0.0:
            return False
    return True


@njit(nogil=True, cache=True, inline="always")
def _interior(mx64, mn64, g, hi, lo, a, deriv):
    """`_rows` on rows a .. h - a - 1 (no reflection), for weights of `_usual_signs`: one loop over those
    rows' cells flattened, each bound summed over its window in the same order and operations as `_rows`
    (so the same bits), with the tap loop unrolled and the cell loop vectorised. The flat index is unsigned:
    a signed one keeps Numba's negative-index wrap-around in the loop, which LLVM then does not vectorise."""
    h, nc = mx64.shape
    fx = mx64.ravel()
    fn = mn64.ravel()
    fhi = hi.ravel()
    flo = lo.ravel()
    step = np.uint64(nc)
    out0 = np.uint64(a * nc)
    for i in range(np.uint64(0), np.uint64((h - 2 * a) * nc)):  # i: the window's first cell
        up = 0.0
        dn = 0.0
        if deriv:  # taps above the centre negative (the minimum bounds from above), centre skipped
            for j in range(a):
                k = i + np.uint64(j) * step
                up += g[j] * fn[k]
                dn += g[j] * fx[k]
            for j in range(a + 1, 2 * a + 1):
                k = i + np.uint64(j) * step
                up += g[j] * fx[k]
                dn += g[j] * fn[k]
        else:
            for j in range(2 * a + 1):
                k = i + np.uint64(j) * step
                up += g[j] * fx[k]
                dn += g[j] * fn[k]
        fhi[out0 + i] = up
        flo[out0 + i] = dn


@njit(nogil=True, cache=True)
def _rows(mx64, mn64, g, col_deriv, hi, lo, r0, r1):
    """hi / lo on rows [r0, r1): each row's window summed tap by tap (any weights, reflected rows)."""
    h, nc = mx64.shape
    a = (g.shape[0] - 1) // 2
    up = np.empty(nc, np.float64)
    dn = np.empty(nc, np.float64)
    for r in range(r0, r1):
        for cb in range(nc):
            up[cb] = 0.0
            dn[cb] = 0.0
        for j in range(2 * a + 1):
            if col_deriv and j == a:
                continue
            gk = g[j]
            row = reflect101(r - a + j, h)
            if gk >= 0.0:
                p = mx64[row]
                q = mn64[row]
            else:
                p = mn64[row]
                q = mx64[row]
            for cb in range(nc):
                up[cb] += gk * p[cb]
                dn[cb] += gk * q[cb]
        hi[r, :] = up
        lo[r, :] = dn


@njit(nogil=True, cache=True, fastmath=True)
def candidates(src, row_taps, row_deriv, col_taps, col_deriv, hi, lo, thr_lo, thr_hi, out, cap):
    """Flat indices (into `out`, at most `cap`) of the pixels whose float32 filter value is <= thr_lo or
    >= thr_hi, looked for only in (row, cell) segments whose bounds reach those thresholds (the row pass is
    redone there, column of cells by column of cells, each row's once while consecutive rows need it).
    Returns the count, or -1 if more than `cap`."""
    h, w = src.shape
    ar = row_taps.shape[0] - 1
    ac = col_taps.shape[0] - 1
    n_ring = 2 * ac + 1  # a window's rows lie in an interval of 2 ac + 1 rows: distinct slots
    pad = np.empty(CELL + 2 * ar, np.float32)
    ring = np.empty((n_ring, CELL), np.float32)
    tag = np.empty(n_ring, np.int64)  # the tile row whose row pass a slot holds
    slot = np.empty(2 * ac + 1, np.int64)
    seg = np.empty(CELL, np.float32)
    n = 0
    for cb in range(hi.shape[1]):
        c0 = cb * CELL
        c1 = min(w, c0 + CELL)
        m = c1 - c0
        tag[:] = -1
        for r in range(h):
            if hi[r, cb] < thr_hi and lo[r, cb] > thr_lo:
                continue
            for j in range(2 * ac + 1):
                t = reflect101(r - ac + j, h)
                slot[j] = t % n_ring
                if tag[slot[j]] != t:
                    _padded(src[t], c0, c1, ar, pad)
                    _row_pass(pad[: m + 2 * ar], row_taps, ring[slot[j], :m], row_deriv)
                    tag[slot[j]] = t
            centre = ring[slot[ac]]
            for i in range(m):
                seg[i] = 0.0 if col_deriv else col_taps[0] * centre[i]
            for k in range(1, ac + 1):
                f = col_taps[k]
                below = ring[slot[ac + k]]
                above = ring[slot[ac - k]]
                for i in range(m):
                    if col_deriv:
                        seg[i] += f * (below[i] - above[i])
                    else:
                        seg[i] += f * (below[i] + above[i])
            for i in range(m):
                if seg[i] <= thr_lo or seg[i] >= thr_hi:
                    if n == cap:
                        return -1
                    out[n] = r * w + c0 + i
                    n += 1
    return n
