"""The watershed's flood loop: skimage's pop/push step on the exact heap (the order of equal markers
depends on its layout; `rank_flood` and `radix_flood` flood once no such ties are left)."""

from __future__ import annotations

from numba import njit

from cellvit_trt.kernels.fp import split_index
from cellvit_trt.kernels.heap import AGE_SHIFT, IDX_MASK, push, sift_down, swap


@njit(nogil=True, cache=True)
def neighbour(p: int, k: int, r: int, c: int, h: int, w: int) -> int:
    """The k-th 4-neighbour of flat index p = (r, c) in skimage's order (up, left, right, down); -1 off the
    tile."""
    if k == 0:
        return p - w if r > 0 else -1
    if k == 1:
        return p - 1 if c > 0 else -1
    if k == 2:
        return p + 1 if c < w - 1 else -1
    return p + w if r < h - 1 else -1


@njit(nogil=True, cache=True)
def flood(flat_img, flat_comp, flat_out, values, keys, n, age, h, w, stop_count, watch, watch_max):
    """Pop/push loop of skimage's watershed on the heap (values, keys)[:n].

    With stop_count > 0, stops once that many watched boundary markers (watch[p] and value <= watch_max[p])
    have popped. Returns (n, age)."""
    inv_w = 1.0 / w
    while n > 0:
        value = values[0]
        key = keys[0]
        p = key & IDX_MASK
        n -= 1
        if n > 0:
            swap(values, keys, 0, n)
            sift_down(values, keys, n)
        lab = flat_out[p]
        r, c = split_index(p, w, inv_w)
        # Neighbours up, left, right, down (skimage's order). An unlabelled in-mask neighbour q takes the
        # label and is pushed with priority (max(image[q], popped value), next age). Written in the loop: an
        # inlined helper returning (n, age) made the whole flood 2-3x slower (Numba 0.68).
        for k in range(4):
            q = neighbour(p, k, r, c, h, w)
            if q < 0 or flat_comp[q] == 0 or flat_out[q] != 0:
                continue
            age += 1
            nv = flat_img[q]
            flat_out[q] = lab
            if nv < value:
                nv = value
            n = push(values, keys, n, nv, (age << AGE_SHIFT) | q)
        if stop_count > 0 and (key >> AGE_SHIFT) == 0 and watch[p] and value <= watch_max[flat_comp[p]]:
            stop_count -= 1
            if stop_count == 0:
                break
    return n, age
