"""The ksize-21 (x40) column filter of `sobel`, on one output row or on two adjacent ones at once.

Each pixel's sum is held in a register across the 21 window rows (the general loop of `sobel.column_filter`
stores out[i] after each tap), in OpenCV's order: `ky[10]*centre + sum_k ky[10+k]*(below_k +/- above_k)`,
each step one fused multiply-add. Two adjacent output rows share 20 of their 22 window rows, so computing
both in one pixel loop loads each row value once for two sums instead of once per sum: the loop is bound by
its loads (1.8 -> 1.3 ms per 1024 x 1024 channel, in-process A/B). Same operations per pixel, same bits.

Both are faster only where the window's rows are not a multiple of 4 KiB apart (such rows share L1 sets and
alias the loads), so the buffers give their rows a padded stride (`sobel.PAD`). Taps and rows are written out:
a loop over a tuple of views is not unrolled before typing and runs 6x slower.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from cellvit_trt.kernels.fp import fma64

__all__ = ["columns21", "columns21_pair", "window22", "columns21_pair_at"]


@njit(nogil=True, cache=True, inline="always")
def _window21(buf, rows, c0, c1):
    """The 21 rows of a ksize-21 window on columns [c0, c1) as separate views (21 streams for LLVM)."""
    return (
        buf[rows[0], c0:c1],
        buf[rows[1], c0:c1],
        buf[rows[2], c0:c1],
        buf[rows[3], c0:c1],
        buf[rows[4], c0:c1],
        buf[rows[5], c0:c1],
        buf[rows[6], c0:c1],
        buf[rows[7], c0:c1],
        buf[rows[8], c0:c1],
        buf[rows[9], c0:c1],
        buf[rows[10], c0:c1],
        buf[rows[11], c0:c1],
        buf[rows[12], c0:c1],
        buf[rows[13], c0:c1],
        buf[rows[14], c0:c1],
        buf[rows[15], c0:c1],
        buf[rows[16], c0:c1],
        buf[rows[17], c0:c1],
        buf[rows[18], c0:c1],
        buf[rows[19], c0:c1],
        buf[rows[20], c0:c1],
    )


@njit(nogil=True, cache=True, inline="always")
def _symmetric(b, ky, i):
    """Pixel i of the smoothing column filter over the 21 views b (b[10] the output row)."""
    acc = ky[10] * b[10][i] + 0.0
    acc = fma64(ky[11], b[11][i] + b[9][i], acc)
    acc = fma64(ky[12], b[12][i] + b[8][i], acc)
    acc = fma64(ky[13], b[13][i] + b[7][i], acc)
    acc = fma64(ky[14], b[14][i] + b[6][i], acc)
    acc = fma64(ky[15], b[15][i] + b[5][i], acc)
    acc = fma64(ky[16], b[16][i] + b[4][i], acc)
    acc = fma64(ky[17], b[17][i] + b[3][i], acc)
    acc = fma64(ky[18], b[18][i] + b[2][i], acc)
    acc = fma64(ky[19], b[19][i] + b[1][i], acc)
    acc = fma64(ky[20], b[20][i] + b[0][i], acc)
    return acc


@njit(nogil=True, cache=True, inline="always")
def _antisymmetric(b, ky, i):
    """Pixel i of the derivative column filter over the 21 views b (b[10] the output row)."""
    acc = fma64(ky[11], b[11][i] - b[9][i], 0.0)
    acc = fma64(ky[12], b[12][i] - b[8][i], acc)
    acc = fma64(ky[13], b[13][i] - b[7][i], acc)
    acc = fma64(ky[14], b[14][i] - b[6][i], acc)
    acc = fma64(ky[15], b[15][i] - b[5][i], acc)
    acc = fma64(ky[16], b[16][i] - b[4][i], acc)
    acc = fma64(ky[17], b[17][i] - b[3][i], acc)
    acc = fma64(ky[18], b[18][i] - b[2][i], acc)
    acc = fma64(ky[19], b[19][i] - b[1][i], acc)
    acc = fma64(ky[20], b[20][i] - b[0][i], acc)
    return acc


@njit(nogil=True, cache=True, inline="always")
def columns21(buf, rows, c0, c1, ky, symmetric, out):
    """The column filter on columns [c0, c1) of the output row whose 21 window rows are buf[rows[:21]]."""
    b = _window21(buf, rows, c0, c1)
    if symmetric:
        for i in range(out.shape[0]):
            out[i] = _symmetric(b, ky, i)
    else:
        for i in range(out.shape[0]):
            out[i] = _antisymmetric(b, ky, i)


@njit(nogil=True, cache=True, inline="always")
def columns21_pair(buf, rows, c0, c1, ky, symmetric, out, out_next):
    """`columns21` for two adjacent output rows at once: buf[rows[:21]] the window of `out`'s row,
    buf[rows[1:22]] that of `out_next`'s (the row below)."""
    b = _window21(buf, rows, c0, c1) + (buf[rows[21], c0:c1],)
    below = b[1:]
    if symmetric:
        for i in range(out.shape[0]):
            acc = _symmetric(b, ky, i)
            nxt = _symmetric(below, ky, i)
            out[i] = acc
            out_next[i] = nxt
    else:
        for i in range(out.shape[0]):
            acc = _antisymmetric(b, ky, i)
            nxt = _antisymmetric(below, ky, i)
            out[i] = acc
            out_next[i] = nxt


@njit(nogil=True, cache=True, inline="always")
def window22(buf, rows, w):
    """The 22 whole rows buf[rows[:22]] (the windows of two adjacent output rows) as views."""
    return _window21(buf, rows, 0, w) + (buf[rows[21], 0:w],)


@njit(nogil=True, cache=True, inline="always")
def columns21_pair_at(b, c0, c1, ky, symmetric, out, out_next):
    """`columns21_pair` on columns [c0, c1) of the whole-row views `b` (`window22`), into out[c0:c1] and
    out_next[c0:c1] (whole output rows): no views made per run. The column index is unsigned: a signed one
    from an unknown start keeps Numba's negative-index wrap-around in the loop, which LLVM then does not
    vectorise (4.3-6 against 0.9-1.1 ns per pixel on runs of 24 px and more)."""
    below = b[1:]
    if symmetric:
        for i in range(np.uint64(c0), np.uint64(c1)):
            acc = _symmetric(b, ky, i)
            nxt = _symmetric(below, ky, i)
            out[i] = acc
            out_next[i] = nxt
    else:
        for i in range(np.uint64(c0), np.uint64(c1)):
            acc = _antisymmetric(b, ky, i)
            nxt = _antisymmetric(below, ky, i)
            out[i] = acc
            out_next[i] = nxt
