"""The watershed relief, -GaussianBlur(dist, 3x3), computed only inside chosen mask components.

The watershed reads its relief only inside mask components that hold two or more marker labels
(`watershed.py`: a component with one label is labelled whole, whatever the relief). On a sparse tile those
are a few dozen nuclei, so there the relief is computed on their row runs only, once the watershed knows
them, instead of on every covered run (the sparse-real tile's 25,800 such pixels: 0.26 -> 0.15 ms; the
sparse tile's 1,000: 0.20 -> 0.015 ms). Same bits as `local_relief.blur_whole`: OpenCV's row filter
`(k0*left + k1*centre) + k2*right` (a multiply, then an add; no fused multiply-add) on the rows above, at and
below, then the symmetric column filter `k1*centre + 0.0 + k0*(below + above)`, BORDER_REFLECT_101 at the
tile's sides, dist read as 0.0 off the kept foreground (`components` == 0), as upstream's product with blb
makes it. The row and column passes here are the whole-tile blur's too. `replicas` checks these bits
against cv2.GaussianBlur once per process.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from cellvit_trt.kernels.fp import reflect101

__all__ = ["relief_at_components", "blur_row", "blur_column"]


@njit(nogil=True, cache=True, inline="always")
def blur_row(src, fg, c0, c1, k0, k1, k2, padrow, out):
    """The 3x3 blur's row pass of one dist row `src` on columns [c0, c1) into out[:c1 - c0] (src read as 0.0
    where the row's components `fg` are 0, BORDER_REFLECT_101 at the tile's sides)."""
    w = src.shape[0]
    n = c1 - c0
    pr = padrow[: n + 2]
    left = reflect101(c0 - 1, w)
    right = reflect101(c1, w)
    pr[0] = src[left] if fg[left] > 0 else 0.0
    pr[n + 1] = src[right] if fg[right] > 0 else 0.0
    mid = src[c0:c1]
    mfg = fg[c0:c1]
    inner = pr[1 : n + 1]
    for i in range(n):
        inner[i] = mid[i] if mfg[i] > 0 else 0.0
    pl = pr[0:n]
    pc = pr[1 : n + 1]
    pq = pr[2 : n + 2]
    for i in range(n):
        s = k0 * pl[i]
        s += k1 * pc[i]
        s += k2 * pq[i]
        out[i] = s


@njit(nogil=True, cache=True, inline="always")
def blur_column(up, cen, dn, k0, k1, o):
    """The 3x3 blur's column pass over three row-pass rows, negated: o = -(k1*cen + 0.0 + k0*(dn + up))."""
    for i in range(o.shape[0]):
        acc = k1 * cen[i] + 0.0
        acc += k0 * (dn[i] + up[i])
        o[i] = -acc


@njit(nogil=True, cache=True)
def relief_at_components(which, members, start, dist, components, taps, relief) -> None:
    """relief = -GaussianBlur(dist * (components > 0), 3x3) at the pixels of each component cp with
    which[cp] true (bool, cp < len(which)); (members, start): the components' pixels, flat indices in raster
    order (`morphology.label4_components`); dist and relief float64 [H, W], taps float64[3]
    (`replicas.gaussian_taps`). Each row run of a component is filtered at once (vectorised)."""
    h, w = dist.shape
    k0, k1, k2 = taps[0], taps[1], taps[2]
    rows = np.empty((3, w), np.float64)
    padrow = np.empty(w + 2, np.float64)
    for cp in range(1, min(which.shape[0], start.shape[0] - 1)):
        if not which[cp]:
            continue
        k = start[cp]
        end = start[cp + 1]
        while k < end:
            p = members[k]
            r = p // w
            c0 = p - r * w
            j = k + 1
            while j < end and members[j] == p + (j - k) and c0 + (j - k) < w:  # the rest of this row run
                j += 1
            n = j - k
            for t in range(3):
                rt = reflect101(r - 1 + t, h)
                blur_row(dist[rt], components[rt], c0, c0 + n, k0, k1, k2, padrow, rows[t])
            blur_column(rows[0, :n], rows[1, :n], rows[2, :n], k0, k1, relief[r, c0 : c0 + n])
            k = j
