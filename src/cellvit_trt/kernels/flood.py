"""Flood loops of the watershed: skimage's pop/push step on the exact heap, and a calendar queue for big
components once the order is strict (no ties left), which any exact priority queue reproduces."""

from __future__ import annotations

import numpy as np
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


@njit(nogil=True, cache=True)
def _bucket(v, vmin, scale, nbk):
    b = np.int64((v - vmin) * scale)
    return min(max(b, np.int64(0)), nbk - 1)


@njit(nogil=True, cache=True)
def flood_calendar(
    flat_img, flat_comp, flat_out, init_val, init_key, n_init, vmin, vmax, size, age, h, w, values, keys
):
    """Flood of one big component once no ties are left: a calendar queue (value buckets, monotone) whose
    current bucket is a small binary heap on (value, age). Same pops as a heap, far fewer cache misses."""
    inv_w = 1.0 / w
    nbk = max(np.int64(64), np.int64(size // 4))
    scale = (nbk - 1) / (vmax - vmin) if vmax > vmin else 0.0
    head = np.full(nbk, -1, np.int64)
    cap = n_init + size + 1
    it_val = np.empty(cap, np.float64)
    it_key = np.empty(cap, np.int64)
    it_next = np.empty(cap, np.int64)
    m = 0
    for j in range(n_init):
        b = _bucket(init_val[j], vmin, scale, nbk)
        it_val[m] = init_val[j]
        it_key[m] = init_key[j]
        it_next[m] = head[b]
        head[b] = m
        m += 1
    n = 0
    cb = np.int64(0)
    while True:
        if n == 0:
            while cb < nbk and head[cb] == -1:
                cb += 1
            if cb == nbk:
                break
            j = head[cb]
            while j != -1:
                n = push(values, keys, n, it_val[j], it_key[j])
                j = it_next[j]
            head[cb] = -1
        value = values[0]
        p = keys[0] & IDX_MASK
        n -= 1
        if n > 0:
            swap(values, keys, 0, n)
            sift_down(values, keys, n)
        lab = flat_out[p]
        r, c = split_index(p, w, inv_w)
        # `flood`'s neighbour step, repeated on purpose: shared through a helper returning one int it cost
        # 8-15 % more CPU per dense tile (bench_postprocess.py runs alternated with the two versions).
        for k in range(4):
            q = neighbour(p, k, r, c, h, w)
            if q < 0 or flat_comp[q] == 0 or flat_out[q] != 0:
                continue
            age += 1
            nv = flat_img[q]
            flat_out[q] = lab
            if nv < value:
                nv = value
            key = (age << AGE_SHIFT) | q
            b = _bucket(nv, vmin, scale, nbk)
            if b <= cb:
                n = push(values, keys, n, nv, key)
            else:
                it_val[m] = nv
                it_key[m] = key
                it_next[m] = head[b]
                head[b] = m
                m += 1
    return age
