"""Watershed relief and raw markers (upstream `_proc_np_hv` steps 2-6) computed at the foreground only.

Outside the foreground upstream's energy is forced to 0 (`overall - (1 - blb)` clipped), so `dist` is exactly
0.0 there and the raw marker 0; the relief is read by the watershed only at foreground pixels, and the 3x3
blur there reads `dist` one pixel around them. So all three are evaluated on the foreground blocks (row
segments, vectorised), with `dist` zero elsewhere; on a tile covered in part only, the relief is left to the
watershed, which needs it in its multi-label components only (`blur_at`). What remains tile-wide is the two
min-max normalisations: the HV extremes (one pass over the map) and the Sobel extremes (`local_sobel`,
`extremes`). Same arithmetic as `energy.py` pixel for pixel: float32 `1 - normalize`, float64 energy,
OpenCV's 3x3 Gaussian row filter ((k0*l + k1*c) + k2*r) and symmetric column filter
(k1*m + 0.0 + k0*(d + u)), BORDER_REFLECT_101.
"""

from __future__ import annotations

import threading

import numpy as np
from numba import njit

from cellvit_trt.kernels.blur_at import blur_column, blur_row
from cellvit_trt.kernels.extremes import CELL, candidates, cell_bounds, error_bound, row_bounds
from cellvit_trt.kernels.fp import fma32, fma64, normalize_params, reflect101
from cellvit_trt.kernels.halfs import as_f32, half_extremes
from cellvit_trt.kernels.layout import cover_runs_into, whole_rows
from cellvit_trt.kernels.local_sobel import exact_at, exact_runs, row_pass_segments
from cellvit_trt.kernels.sobel import _sep_filter, sobel_kernels

__all__ = ["local_relief_and_markers", "sobel_at_runs", "fuse_runs", "blur_whole"]

#: Foreground runs closer than this (pixels) are computed as one run, and rows covered to at least
#: this fraction are computed whole (`layout.cover_runs`).
COVER_GAP = 16
COVER_FULL_ROW = 0.25
#: Covering at least this fraction of the tile, the region is the whole tile.
DENSE_COVER = 0.3
#: Foreground runs shorter than this on average (pixels): the energy fuse of a whole-tile relief runs branch
#: free (`_fuse_row_vectorised`) rather than branching on each pixel's foreground.
BRANCH_FREE_RUN = 11
#: Most candidate pixels the bound may leave before the whole tile is filtered exactly instead.
MAX_CANDIDATES = 4096
#: |map| * sum of |taps| above which float32 could overflow: the whole tile is filtered exactly instead.
_F32_SAFE = 1.0e36


def sobel_at_runs(src, dx, ksize, binary, runs, out, segments=None, src_range=None):
    """Sobel of the min-max normalised `src` (float32 [H, W], or float16 viewed as uint16) exact at the
    pixels of `binary`'s row runs (written to `out`), and its exact tile-wide (min, max): what upstream's
    whole-tile cv2 calls give. `segments`: `local_sobel.row_pass_segments` of those runs, `src_range`:
    src's (min, max), if known."""
    if src_range is None and src.dtype == np.uint16:
        src_range = half_extremes(src.view(np.float16))[1]
    elif src_range is None:
        src_range = (src.min(), src.max())
    vlo, vhi = float(src_range[0]), float(src_range[1])
    scale, shift = normalize_params(vlo, vhi)
    kx, ky = sobel_kernels(dx, ksize)
    if segments is None:
        segments = row_pass_segments(binary, *runs, ky.shape[0] // 2)
    s32, t32 = np.float32(scale), np.float32(shift)
    vmin, vmax = exact_runs(src, s32, t32, kx, ky, dx == 1, *segments, *runs, out)
    if scale == 0.0 or (runs[1].shape[0] == binary.shape[0] and np.all(runs[2] - runs[1] == binary.shape[1])):
        return vmin, vmax  # all-zero normalised map (its Sobel is 0 everywhere), or every pixel computed
    abs_max = max(abs(vlo), abs(vhi))
    if abs_max * float(np.abs(kx).sum() * np.abs(ky).sum()) > _F32_SAFE:
        return _whole_tile(src, s32, t32, dx, ksize, out)
    h, w = src.shape
    ar, ac = kx.shape[0] // 2, ky.shape[0] // 2
    n_cells = -(-w // CELL)
    cmax = np.empty((h, n_cells), np.float32)
    cmin = np.empty((h, n_cells), np.float32)
    row_taps = kx[ar:].astype(np.float32)
    row_bounds(src, row_taps, dx == 1, cmax, cmin)
    hi = np.empty((h, n_cells), np.float64)
    lo = np.empty((h, n_cells), np.float64)
    col_taps = ky[ac:].astype(np.float32)
    cell_bounds(cmax, cmin, col_taps, dx != 1, hi, lo)
    eps = error_bound(kx, ky, scale, shift, abs_max)
    cand = np.empty(MAX_CANDIDATES, np.int64)
    n = candidates(
        src,
        row_taps,
        dx == 1,
        col_taps,
        dx != 1,
        hi,
        lo,
        (vmin + eps) / scale,
        (vmax - eps) / scale,
        cand,
        MAX_CANDIDATES,
    )
    if n < 0:
        return _whole_tile(src, s32, t32, dx, ksize, out)
    for p in cand[:n]:
        v = exact_at(src, s32, t32, kx, ky, dx == 1, int(p) // w, int(p) % w)
        vmin = min(vmin, v)
        vmax = max(vmax, v)
    return vmin, vmax


def _whole_tile(src, s32, t32, dx, ksize, out):
    """The exact filter on the whole tile (same bits as `exact_runs`): for maps the bound cannot prune."""
    kx, ky = sobel_kernels(dx, ksize)
    full = _sep_filter(_normalised(src, s32, t32), kx, ky, dx == 1)
    out[:] = full
    return float(full.min()), float(full.max())


@njit(nogil=True, cache=True)
def _normalised(src, s32, t32):
    out = np.empty(src.shape, np.float32)
    for r in range(src.shape[0]):
        for c in range(src.shape[1]):
            out[r, c] = fma32(as_f32(src[r, c]), s32, t32)
    return out


_SCRATCH = threading.local()


def _scratch(h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three float64 [h, w] buffers kept per thread between tiles: written sparsely but in every row, fresh
    8 MB arrays would cost a page fault per 4 KiB on each tile. Their contents are never read before being
    written (np.empty semantics)."""
    bufs = getattr(_SCRATCH, "bufs", None)
    if bufs is None or bufs[0].shape != (h, w):
        bufs = tuple(np.empty((h, w), np.float64) for _ in range(3))
        _SCRATCH.bufs = bufs
    return bufs


def _branch_free(fg_runs) -> bool:
    """Whether the whole-tile energy fuse should run branch free: the foreground's runs are short."""
    n_px = int((fg_runs[2] - fg_runs[1]).sum())
    return n_px < BRANCH_FREE_RUN * fg_runs[1].shape[0]


def local_relief_and_markers(
    hv, fg_runs, components, ksize, marker_threshold, blur_taps, marker=None, cover=None, hv_range=None
):
    """(relief float64 [H, W], raw marker uint8 [H, W], lazy) from hv [2, H, W] (float32, or float16 viewed
    as uint16), exact on the kept foreground (`components` > 0, whose row runs are `fg_runs`); marker 0
    elsewhere. lazy None: the relief is computed on every covered row; else (dist, blur_taps): the relief is
    left to `watershed.watershed_seeded_into`, which blurs dist where it reads it. The relief and dist are
    per-thread buffers, valid until this thread's next call; `marker` and `cover` (uint8 [H, W], any
    contents) are buffers to use instead of fresh arrays; `hv_range` ([2, 2]) each channel's (min, max), if
    known."""
    _, h, w = hv.shape
    if cover is None:
        cover = np.zeros((h, w), np.uint8)
    else:
        cover[:] = 0
    cover, n_cover, runs = cover_runs_into(cover, *fg_runs, COVER_GAP, COVER_FULL_ROW)
    if n_cover >= DENSE_COVER * cover.size:  # mostly covered: whole rows vectorise best, nothing to bound
        cover[:] = 1
        runs = (np.arange(h + 1, dtype=np.int64), np.zeros(h, np.int64), np.full(h, w, np.int64))
    sobel_h, sobel_v, dist = _scratch(h, w)
    params = []
    segments = row_pass_segments(cover, *runs, sobel_kernels(1, ksize)[1].shape[0] // 2)  # both channels
    for ch, dx, out in ((0, 1, sobel_h), (1, 0, sobel_v)):
        src_range = None if hv_range is None else hv_range[ch]
        smin, smax = sobel_at_runs(hv[ch], dx, ksize, cover, runs, out, segments, src_range)
        params.append(normalize_params(smin, smax))
    if marker is None:
        marker = np.empty((h, w), np.uint8)
    (hs, ht), (vs, vt) = params
    relief = sobel_h  # reused for the relief once read
    if whole_rows(*runs, w):  # every pixel written; dist fused row by row into the blur, never stored
        fuse = (sobel_h, sobel_v, hs, ht, vs, vt, float(marker_threshold), marker, _branch_free(fg_runs))
        blur_whole(components, dist, blur_taps, relief, fuse)
        return relief, marker, None
    marker[:] = 0
    fuse_runs(*runs, components, sobel_h, sobel_v, hs, ht, vs, vt, float(marker_threshold), dist, marker)
    return relief, marker, (dist, blur_taps)  # the watershed blurs where it reads (`blur_at`)


@njit(nogil=True, cache=True, inline="always")
def _fuse_at(a_h, a_v, comp, hs, ht, vs, vt, marker_threshold, d, m, c0, c1):
    """`energy._fuse` on columns [c0, c1) of whole rows: d = 1 - energy (0.0 off the kept foreground, as
    upstream's product with blb gives) and the raw marker m. The column index is unsigned, so that Numba's
    negative-index wrap-around leaves the loop and LLVM vectorises it (`column21.columns21_pair_at`)."""
    one32 = np.float32(1.0)
    for i in range(np.uint64(c0), np.uint64(c1)):
        a = one32 - np.float32(fma64(a_h[i], hs, ht))
        b = one32 - np.float32(fma64(a_v[i], vs, vt))
        o32 = a if a >= b else b
        overall = np.float64(o32) - 0.0
        overall = 0.0 if overall < 0.0 else overall
        fg = comp[i] > 0
        d[i] = (1.0 - overall) * 1.0 if fg else 0.0
        m[i] = np.uint8(fg & (overall < marker_threshold))  # branch-free: the loop vectorises


@njit(nogil=True, cache=True, inline="always")
def _fuse_row(a_h, a_v, comp, hs, ht, vs, vt, marker_threshold, d, m):
    """`_fuse_at` on whole row segments."""
    _fuse_at(a_h, a_v, comp, hs, ht, vs, vt, marker_threshold, d, m, 0, d.shape[0])


@njit(nogil=True, cache=True)
def _fuse_row_vectorised(a_h, a_v, comp, hs, ht, vs, vt, marker_threshold, d, m):
    """`_fuse_row` compiled on its own: LLVM then vectorises it, every pixel computed without a branch.
    Inlined into `blur_whole` it stays a scalar loop that branches on the foreground, cheaper where the
    foreground comes in long runs and dearer where it alternates often (mispredictions); same bits."""
    _fuse_row(a_h, a_v, comp, hs, ht, vs, vt, marker_threshold, d, m)


@njit(nogil=True, cache=True)
def fuse_runs(row_ptr, c0s, c1s, components, sh, sv, hs, ht, vs, vt, marker_threshold, dist, marker):
    """`_fuse_at` on the row runs, into dist and marker: whole-row views, none made per run (a sparse tile
    has thousands of short runs)."""
    h = dist.shape[0]
    for r in range(h):
        if row_ptr[r + 1] == row_ptr[r]:
            continue
        a_h, a_v, comp, d, m = sh[r], sv[r], components[r], dist[r], marker[r]
        for k in range(row_ptr[r], row_ptr[r + 1]):
            _fuse_at(a_h, a_v, comp, hs, ht, vs, vt, marker_threshold, d, m, c0s[k], c1s[k])


@njit(nogil=True, cache=True, inline="always")
def _dist_row(dist, components, t, fuse, drow):
    """Row t of dist: read from `dist`, or with `fuse` = (sh, sv, hs, ht, vs, vt, threshold, marker,
    branch_free) computed into `drow` (marker row t written too), so that dist never goes through memory."""
    if fuse is None:
        return dist[t]
    sh, sv, hs, ht, vs, vt, thr, marker, branch_free = fuse
    if branch_free:
        _fuse_row_vectorised(sh[t], sv[t], components[t], hs, ht, vs, vt, thr, drow, marker[t])
    else:
        _fuse_row(sh[t], sv[t], components[t], hs, ht, vs, vt, thr, drow, marker[t])
    return drow


@njit(nogil=True, cache=True)
def blur_whole(components, dist, k, relief, fuse=None):
    """relief = -GaussianBlur(dist, 3x3) on the whole tile (OpenCV's order of operations and
    BORDER_REFLECT_101), dist taken as 0.0 off the kept foreground (`components` == 0), as upstream's
    product with blb makes it: each row pass computed once, kept in a ring of 3. With
    `fuse` (see `_dist_row`) dist is fused row by row first; relief may then be `fuse`'s sh: row r is
    written after sh's row r + 1 has been read."""
    h, w = components.shape
    k0, k1, k2 = k[0], k[1], k[2]
    ring = np.empty((3, w), np.float64)
    padrow = np.empty(w + 2, np.float64)
    drow = np.empty(w, np.float64)
    for t in range(min(2, h)):
        src = _dist_row(dist, components, t, fuse, drow)
        blur_row(src, components[t], 0, w, k0, k1, k2, padrow, ring[t])
    for r in range(h):
        if r + 1 < h and r >= 1:
            src = _dist_row(dist, components, r + 1, fuse, drow)
            blur_row(src, components[r + 1], 0, w, k0, k1, k2, padrow, ring[(r + 1) % 3])
        up = ring[reflect101(r - 1, h) % 3]
        dn = ring[reflect101(r + 1, h) % 3]
        blur_column(up, ring[r % 3], dn, k0, k1, relief[r])
