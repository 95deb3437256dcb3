"""cv2.Sobel(float32 -> float64) re-implemented in Numba with OpenCV's summation order.

OpenCV runs a large-kernel Sobel as a separable filter: a generic row filter (taps summed in order, float32
source times float64 tap) into a float64 buffer, then a symmetric / antisymmetric column filter
(`ky[0]*centre + sum_k ky[k]*(below_k +/- above_k)`), borders reflected without repeating the edge
(BORDER_REFLECT_101). The taps are integers, so the row products are exact; OpenCV's AVX2 build contracts the
column accumulation into fused multiply-adds, which this module does explicitly (llvm.fma). Same order, same
bits: `tests/kernels/test_building_blocks.py` checks bit equality against cv2.

`row_filter` and `column_filter` are the two passes on one row segment; the whole-tile filter here and the
region filter of `local_sobel` share them, so a pixel gets the same bits whichever computes it. The loops are
written so that LLVM vectorises them over pixels (each pixel keeps its own order of operations).

OpenCV's rounding depends on the code path its CPU dispatcher picks, so `use_numba_sobel()` compares the two
once per process and ksize on a random map and falls back to cv2.Sobel where they are not bit-identical.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np
from numba import njit

from cellvit_trt.kernels.column21 import columns21, columns21_pair
from cellvit_trt.kernels.fp import fma64, reflect101

__all__ = [
    "sobel_x",
    "sobel_y",
    "sobel",
    "use_numba_sobel",
    "sobel_kernels",
    "row_filter",
    "column_filter",
    "column_filter_pair",
    "window_rows",
    "pair_rows",
]

_KERNELS: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def sobel_kernels(dx: int, ksize: int) -> tuple[np.ndarray, np.ndarray]:
    """(row taps, column taps) float64 of cv2.Sobel(dx, 1 - dx, ksize), as cv2.getDerivKernels gives them."""
    key = (dx, ksize)
    if key not in _KERNELS:
        kx, ky = cv2.getDerivKernels(dx, 1 - dx, ksize, normalize=False, ktype=cv2.CV_64F)
        _KERNELS[key] = (np.ascontiguousarray(kx.ravel()), np.ascontiguousarray(ky.ravel()))
    return _KERNELS[key]


@njit(nogil=True, cache=True, inline="always")
def _row_taps(pad, kx, out, n):
    """Register-blocked row filter: with n a compile-time constant the tap loop unrolls and the pixel loop
    vectorises, each pixel still summing its taps in order. The products are exact (integer taps of at most
    28 bits times float32 values), so a fused multiply-add rounds exactly as OpenCV's multiply then add."""
    for i in range(out.shape[0]):
        acc = kx[0] * pad[i]
        for k in range(1, n):
            acc = fma64(kx[k], pad[i + k], acc)
        out[i] = acc


@njit(nogil=True, cache=True)
def row_filter(pad: np.ndarray, kx: np.ndarray, out: np.ndarray) -> None:
    """out[i] = kx[0]*pad[i] + kx[1]*pad[i+1] + ... summed in tap order (OpenCV's generic row filter)."""
    n = kx.shape[0]
    if n == 21:  # x40
        _row_taps(pad, kx, out, 21)
    elif n == 11:  # x20
        _row_taps(pad, kx, out, 11)
    else:
        w = out.shape[0]
        f = kx[0]
        p0 = pad[0:w]
        for i in range(w):
            out[i] = f * p0[i]
        for k in range(1, n):
            f = kx[k]
            pk = pad[k : k + w]
            for i in range(w):
                out[i] += f * pk[i]


@njit(nogil=True, cache=True)
def window_rows(r: int, h: int, ac: int, n: int, rows: np.ndarray) -> None:
    """rows[j] = buffer row of tile row r - ac + j (reflected at the top and bottom of a tile of h rows);
    tile row t lives in buffer row t % n (n = h for a whole-tile buffer, 2 ac + 1 for a ring)."""
    for j in range(2 * ac + 1):
        rows[j] = reflect101(r - ac + j, h) % n


#: Extra columns per row of the row-pass buffers, so that their rows are not 4 KiB apart (`column21`).
PAD = 8


@njit(nogil=True, cache=True)
def column_filter(buf: np.ndarray, rows: np.ndarray, c0: int, c1: int, ky: np.ndarray, symmetric: bool, out):
    """OpenCV's symmetric / antisymmetric column filter on columns [c0, c1) into out[:c1 - c0]; `rows` the
    buffer rows of the window (`window_rows`)."""
    ac = ky.shape[0] // 2
    w = c1 - c0
    if ac == 10:
        columns21(buf, rows, c0, c1, ky, symmetric, out[:w])
    elif symmetric:
        f = ky[ac]
        b0 = buf[rows[ac], c0:c1]
        for i in range(w):
            out[i] = f * b0[i] + 0.0
        for k in range(1, ac + 1):
            f = ky[ac + k]
            bd = buf[rows[ac + k], c0:c1]
            bu = buf[rows[ac - k], c0:c1]
            for i in range(w):
                out[i] = fma64(f, bd[i] + bu[i], out[i])
    else:
        for i in range(w):
            out[i] = 0.0
        for k in range(1, ac + 1):
            f = ky[ac + k]
            bd = buf[rows[ac + k], c0:c1]
            bu = buf[rows[ac - k], c0:c1]
            for i in range(w):
                out[i] = fma64(f, bd[i] - bu[i], out[i])


@njit(nogil=True, cache=True)
def column_filter_pair(buf, rows, c0, c1, ky, symmetric: bool, out, out_next) -> None:
    """`column_filter` on two adjacent output rows: buf[rows[:2 ac + 1]] the window of `out`'s row,
    buf[rows[1:2 ac + 2]] that of `out_next`'s (the row below it)."""
    ac = ky.shape[0] // 2
    if ac == 10:
        columns21_pair(buf, rows, c0, c1, ky, symmetric, out[: c1 - c0], out_next[: c1 - c0])
    else:
        column_filter(buf, rows[: 2 * ac + 1], c0, c1, ky, symmetric, out)
        column_filter(buf, rows[1:], c0, c1, ky, symmetric, out_next)


@njit(nogil=True, cache=True)
def pair_rows(r: int, h: int, ac: int, n: int, rows: np.ndarray) -> bool:
    """rows[:2 ac + 2] = buffer rows of tile rows r - ac .. r + 1 + ac (`window_rows`' layout), if output rows
    r and r + 1 both have unreflected windows inside the tile; else False."""
    if r < ac or r + 1 + ac >= h:
        return False
    for j in range(2 * ac + 2):
        rows[j] = (r - ac + j) % n
    return True


@njit(nogil=True, cache=True)
def _sep_filter(src: np.ndarray, kx: np.ndarray, ky: np.ndarray, col_symmetric: bool) -> np.ndarray:
    h, w = src.shape
    ar = kx.shape[0] // 2
    buf = np.empty((h, w + PAD), np.float64)
    pad = np.empty(w + 2 * ar, np.float64)
    colidx = np.empty(w + 2 * ar, np.int64)
    for j in range(w + 2 * ar):
        colidx[j] = reflect101(j - ar, w)
    for r in range(h):
        for j in range(w + 2 * ar):
            pad[j] = np.float64(src[r, colidx[j]])
        row_filter(pad, kx, buf[r, :w])
    out = np.empty((h, w), np.float64)
    ac = ky.shape[0] // 2
    rows = np.empty(2 * ac + 2, np.int64)
    r = 0
    while r < h:
        if pair_rows(r, h, ac, h, rows):
            column_filter_pair(buf, rows, 0, w, ky, col_symmetric, out[r], out[r + 1])
            r += 2
        else:
            window_rows(r, h, ac, h, rows)
            column_filter(buf, rows, 0, w, ky, col_symmetric, out[r])
            r += 1
    return out


def sobel_x(src: np.ndarray, ksize: int) -> np.ndarray:
    """cv2.Sobel(src, CV_64F, 1, 0, ksize=ksize) for float32 src."""
    kx, ky = sobel_kernels(1, ksize)
    return _sep_filter(src, kx, ky, True)


def sobel_y(src: np.ndarray, ksize: int) -> np.ndarray:
    """cv2.Sobel(src, CV_64F, 0, 1, ksize=ksize) for float32 src."""
    kx, ky = sobel_kernels(0, ksize)
    return _sep_filter(src, kx, ky, False)


_CHECKED: dict[int, bool] = {}
_LOCK = threading.Lock()


def use_numba_sobel(ksize: int) -> bool:
    """True when this module reproduces cv2.Sobel bit for bit on this machine (checked once per ksize)."""
    with _LOCK:
        if ksize not in _CHECKED:
            if ksize < 3:
                _CHECKED[ksize] = False  # ksize 1 is OpenCV's unsmoothed 3-tap case; leave it to OpenCV
                return False
            rng = np.random.default_rng(12345)
            probe = rng.random((3 * ksize + 7, 4 * ksize + 5)).astype(np.float32)
            same = np.array_equal(
                sobel_x(probe, ksize), cv2.Sobel(probe, cv2.CV_64F, 1, 0, ksize=ksize)
            ) and (np.array_equal(sobel_y(probe, ksize), cv2.Sobel(probe, cv2.CV_64F, 0, 1, ksize=ksize)))
            _CHECKED[ksize] = bool(same)
        return _CHECKED[ksize]


def sobel(src: np.ndarray, dx: int, ksize: int) -> np.ndarray:
    """cv2.Sobel(src, CV_64F, dx, 1 - dx, ksize) for float32 src: Numba where bit-identical, else OpenCV."""
    if use_numba_sobel(ksize):
        return sobel_x(src, ksize) if dx == 1 else sobel_y(src, ksize)
    return cv2.Sobel(src, cv2.CV_64F, dx, 1 - dx, ksize=ksize)
