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

from cellvit_trt.kernels.fp import fma64, reflect101

__all__ = [
    "sobel_x",
    "sobel_y",
    "sobel",
    "use_numba_sobel",
    "sobel_kernels",
    "row_filter",
    "column_filter",
    "window_rows",
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
def _columns21(buf, rows, c0, c1, ky, symmetric, out):
    """`column_filter` for ksize 21 with each pixel's sum held in a register across the taps (the general
    loop stores out[i] after each): same operations per pixel, same bits. It is faster only where the
    window's rows are not a multiple of 4 KiB apart (such rows share L1 sets and alias the loads), so the
    buffers give their rows a padded stride (`PAD`). Taps written out: a tap loop over the tuple is not
    unrolled before typing and runs 6x slower."""
    b = _window21(buf, rows, c0, c1)
    if symmetric:
        for i in range(out.shape[0]):
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
            out[i] = acc
    else:
        for i in range(out.shape[0]):
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
            out[i] = acc


#: Extra columns per row of the row-pass buffers, so that their rows are not 4 KiB apart (`_columns21`).
PAD = 8


@njit(nogil=True, cache=True)
def column_filter(buf: np.ndarray, rows: np.ndarray, c0: int, c1: int, ky: np.ndarray, symmetric: bool, out):
    """OpenCV's symmetric / antisymmetric column filter on columns [c0, c1) into out[:c1 - c0]; `rows` the
    buffer rows of the window (`window_rows`)."""
    ac = ky.shape[0] // 2
    w = c1 - c0
    if ac == 10:
        _columns21(buf, rows, c0, c1, ky, symmetric, out[:w])
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
    rows = np.empty(ky.shape[0], np.int64)
    for r in range(h):
        window_rows(r, h, ky.shape[0] // 2, h, rows)
        column_filter(buf, rows, 0, w, ky, col_symmetric, out[r])
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
