"""Watershed relief and raw markers (upstream `_proc_np_hv` steps 2-6) computed at the foreground only.

Outside the foreground upstream's energy is forced to 0 (`overall - (1 - blb)` clipped), so `dist` is exactly
0.0 there and the raw marker 0; the relief is read by the watershed only at foreground pixels, and the 3x3
blur there reads `dist` one pixel around them. So all three are evaluated on the foreground blocks (row
segments, vectorised), with `dist` zero elsewhere. What remains tile-wide is the two min-max normalisations:
the HV extremes (one pass over the map) and the Sobel extremes (`local_sobel`, `extremes`). Same arithmetic as
`energy.py` pixel for pixel: float32 `1 - normalize`, float64 energy, OpenCV's 3x3 Gaussian row filter
((k0*l + k1*c) + k2*r) and symmetric column filter (k1*m + 0.0 + k0*(d + u)), BORDER_REFLECT_101.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from cellvit_trt.kernels.extremes import approx_candidates, error_bound
from cellvit_trt.kernels.fp import fma64, normalize_params, reflect101
from cellvit_trt.kernels.layout import BLOCK_H, BLOCK_W
from cellvit_trt.kernels.local_sobel import exact_at, exact_blocks
from cellvit_trt.kernels.sobel import sobel_kernels

__all__ = ["local_relief_and_markers", "sobel_at_blocks", "fuse_blocks", "blur_blocks"]

#: Above this fraction of foreground blocks the whole tile is filtered exactly (no float32 scan).
DENSE_FRACTION = 0.7
#: Most candidate pixels the float32 scan may list before every block is computed exactly instead.
MAX_CANDIDATES = 4096
#: |map| * sum of |taps| above which float32 could overflow: every block is computed exactly instead.
_F32_SAFE = 1.0e36


def _outward32(thr: float, down: bool) -> np.float32:
    v = np.float32(thr)
    if down and float(v) > thr:
        v = np.nextafter(v, np.float32(-np.inf))
    if not down and float(v) < thr:
        v = np.nextafter(v, np.float32(np.inf))
    return v


def sobel_at_blocks(src: np.ndarray, dx: int, ksize: int, active: np.ndarray, out: np.ndarray, rowbuf):
    """Sobel of the min-max normalised `src` (float32 [H, W]) exact on the `active` blocks (written to `out`),
    and its exact tile-wide (min, max): what upstream's whole-tile cv2 calls would give."""
    vlo, vhi = float(src.min()), float(src.max())
    scale, shift = normalize_params(vlo, vhi)
    kx, ky = sobel_kernels(dx, ksize)
    s32, t32 = np.float32(scale), np.float32(shift)
    everything = active.mean() >= DENSE_FRACTION
    abs_max = max(abs(vlo), abs(vhi))
    weight = float(np.abs(kx).sum() * np.abs(ky).sum())
    if abs_max * weight > _F32_SAFE:
        everything = True
    blocks = np.ones_like(active) if everything else active
    vmin, vmax = exact_blocks(src, s32, t32, kx, ky, dx == 1, blocks, BLOCK_H, BLOCK_W, rowbuf, out)
    if everything or scale == 0.0:  # scale 0: the normalised map is all zeros, so is its Sobel
        return vmin, vmax
    eps = error_bound(kx, ky, scale, shift, abs_max)
    thr_lo = _outward32((vmin + eps) / scale, down=False)
    thr_hi = _outward32((vmax - eps) / scale, down=True)
    ar, ac = kx.shape[0] // 2, ky.shape[0] // 2
    row_taps = kx[ar:].astype(np.float32)
    col_taps = ky[ac:].astype(np.float32)
    cand = np.empty(MAX_CANDIDATES, np.int64)
    n = approx_candidates(
        src, row_taps, col_taps, dx == 1, thr_lo, thr_hi, active, BLOCK_H, BLOCK_W, cand, MAX_CANDIDATES
    )
    if n < 0:
        return exact_blocks(
            src, s32, t32, kx, ky, dx == 1, np.ones_like(active), BLOCK_H, BLOCK_W, rowbuf, out
        )
    w = src.shape[1]
    for p in cand[:n]:
        v = exact_at(src, s32, t32, kx, ky, dx == 1, int(p) // w, int(p) % w)
        vmin = min(vmin, v)
        vmax = max(vmax, v)
    return vmin, vmax


def local_relief_and_markers(hv, components, active, ksize, marker_threshold, blur_taps):
    """(relief float64 [H, W], raw marker uint8 [H, W]) on the foreground blocks `active` (relief undefined
    and marker 0 elsewhere); `components` the kept foreground components (> 0 on the foreground)."""
    _, h, w = hv.shape
    rowbuf = np.empty((h, w), np.float64)
    sobels = []
    params = []
    for ch, dx in ((0, 1), (1, 0)):
        out = np.empty((h, w), np.float64)
        smin, smax = sobel_at_blocks(hv[ch], dx, ksize, active, out, rowbuf)
        sobels.append(out)
        params.append(normalize_params(smin, smax))
    dist = np.zeros((h, w), np.float64)
    marker = np.zeros((h, w), np.uint8)
    (hs, ht), (vs, vt) = params
    fuse_blocks(
        active,
        BLOCK_H,
        BLOCK_W,
        components,
        sobels[0],
        sobels[1],
        hs,
        ht,
        vs,
        vt,
        float(marker_threshold),
        dist,
        marker,
    )
    relief = rowbuf  # free again: reused for the relief
    blur_blocks(active, BLOCK_H, BLOCK_W, dist, blur_taps, relief)
    return relief, marker


@njit(nogil=True, cache=True)
def fuse_blocks(active, bh, bw, components, sh, sv, hs, ht, vs, vt, marker_threshold, dist, marker):
    """`energy._fuse` (any blb) on the active blocks' row segments: dist and the raw marker, vectorised."""
    h, w = dist.shape
    nbr, nbc = active.shape
    one32 = np.float32(1.0)
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
                a_h = sh[r, c0:c1]
                a_v = sv[r, c0:c1]
                comp = components[r, c0:c1]
                d = dist[r, c0:c1]
                m = marker[r, c0:c1]
                for i in range(c1 - c0):
                    a = one32 - np.float32(fma64(a_h[i], hs, ht))
                    b = one32 - np.float32(fma64(a_v[i], vs, vt))
                    o32 = a if a >= b else b
                    fb = 1.0 if comp[i] > 0 else 0.0
                    overall = np.float64(o32) - (1.0 - fb)
                    if overall < 0.0:
                        overall = 0.0
                    d[i] = (1.0 - overall) * fb
                    m[i] = 1 if fb > 0.0 and overall < marker_threshold else 0
            bc = end


@njit(nogil=True, cache=True)
def blur_blocks(active, bh, bw, dist, k, relief):
    """relief = -GaussianBlur(dist, 3x3) on the active blocks (OpenCV's order of operations and
    BORDER_REFLECT_101); `dist` must be 0 outside the active blocks."""
    h, w = dist.shape
    nbr, nbc = active.shape
    k0, k1, k2 = k[0], k[1], k[2]
    rows = np.empty((bh + 2, w), np.float64)
    padrow = np.empty(w + 2, np.float64)
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
            n = c1 - c0
            for j in range(r1 - r0 + 2):
                t = reflect101(r0 - 1 + j, h)
                src = dist[t]
                pr = padrow[: n + 2]
                pr[0] = src[reflect101(c0 - 1, w)]
                pr[n + 1] = src[reflect101(c1, w)]
                mid = src[c0:c1]
                inner = pr[1 : n + 1]
                for i in range(n):
                    inner[i] = mid[i]
                out = rows[j, :n]
                pl = pr[0:n]
                pc = pr[1 : n + 1]
                pq = pr[2 : n + 2]
                for i in range(n):
                    s = k0 * pl[i]
                    s += k1 * pc[i]
                    s += k2 * pq[i]
                    out[i] = s
            for r in range(r0, r1):
                j = r - r0 + 1
                up = rows[j - 1, :n]
                cen = rows[j, :n]
                dn = rows[j + 1, :n]
                o = relief[r, c0:c1]
                for i in range(n):
                    acc = k1 * cen[i] + 0.0
                    acc += k0 * (dn[i] + up[i])
                    o[i] = -acc
            bc = end
