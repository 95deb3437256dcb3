"""The watershed's per-component flood when its boundary markers are untied, on ranks instead of a heap.

Every queue item's priority is known before the flood starts. A boundary marker enters at its own value; an
unlabelled pixel q is pushed once, at max(value[q], last popped value): at its own value if that is above
the current level, else at the current level itself. So the component's items are sorted once by their own
value (a counting sort on the order keys' top bits, then insertion sort inside the buckets), and the flood
keeps:
- a bit set over the sorted ranks for the items pushed above the level: as the flood is monotone, the next
  one is the first set bit past the level, found by a forward scan;
- a FIFO for the items pushed at the level (own value at or below it): they pop next, in push order, since
  every item already queued at that value was pushed before the level reached it, so is older.
Equal own values (rare) are a tie block of ranks: its queued items pop in push order (ages recorded).
That is skimage's (value, age) order exactly, as `radix_flood` and the binary heap give it, at a fraction of
the cost per pop (no sifting, no redistribution). Each unlabelled pixel's rank is kept in the label map
itself as -(rank + 1) until it is pushed, so one load tells whether a neighbour is free and where it goes.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from cellvit_trt.kernels.fp import split_index
from cellvit_trt.kernels.radix_flood import clz64, ctz64, order_key

__all__ = ["flood_ranked", "sort_by_key"]

#: A bucket holding more items than this: the component is sorted with NumPy's sort instead.
_INSERTION_MAX = 32
_ONE = np.uint64(1)


@njit(nogil=True, cache=True, inline="always")
def _insertion_sort(skey, spix, a, b):
    for i in range(a + 1, b):
        k = skey[i]
        p = spix[i]
        j = i - 1
        while j >= a and skey[j] > k:
            skey[j + 1] = skey[j]
            spix[j + 1] = spix[j]
            j -= 1
        skey[j + 1] = k
        spix[j + 1] = p


@njit(nogil=True, cache=True)
def sort_by_key(keys, pix, skey, spix, counts) -> None:
    """(skey, spix)[:n] = the n = len(keys) items (keys[i], pix[i]) in increasing key order (equal keys in any
    order). counts: int64 scratch of at least 2 n + 1."""
    n = keys.shape[0]
    if n == 0:
        return
    kmin = keys[0]
    kmax = keys[0]
    for i in range(1, n):
        kmin = min(kmin, keys[i])
        kmax = max(kmax, keys[i])
    lg = 0
    while (1 << lg) < n:
        lg += 1
    span = np.uint64(kmax) - np.uint64(kmin)  # exact: wraps only past 2**63, which uint64 holds
    shift = np.uint64(max(0, 64 - clz64(np.int64(span)) - lg))  # top lg bits of the span: < 2 ** lg buckets
    nb = 1 << lg
    cnt = counts[: nb + 1]
    cnt[:] = 0
    base = np.uint64(kmin)
    for i in range(n):
        cnt[((np.uint64(keys[i]) - base) >> shift) + _ONE] += 1
    crowded = 0
    for b in range(nb):
        crowded = max(crowded, cnt[b + 1])
        cnt[b + 1] += cnt[b]
    if crowded > _INSERTION_MAX:  # clustered values: n log n rather than quadratic
        order = np.argsort(keys)
        for i in range(n):
            skey[i] = keys[order[i]]
            spix[i] = pix[order[i]]
        return
    for i in range(n):
        b = (np.uint64(keys[i]) - base) >> shift
        j = cnt[b]
        skey[j] = keys[i]
        spix[j] = pix[i]
        cnt[b] = j + 1
    _insertion_sort(skey, spix, 0, n)  # out of order only inside buckets of at most _INSERTION_MAX


@njit(nogil=True, cache=True)
def flood_ranked(flat_bits, flat_out, marks, free, h, w, ukey, upix, skey, spix, counts, bits, age, fifo):
    """Flood one mask component: `marks` its boundary markers (flat indices; labelled in flat_out, values
    pairwise distinct), `free` its unlabelled pixels (flat_out 0); each free pixel takes the label of the
    first popped 4-neighbour (order up, left, right, down), pops ordered by (priority, age) as
    `flood.flood`. `flat_bits` the relief's float64 bits. Scratch, for n = len(marks) + len(free): ukey,
    upix, skey, spix, age, fifo of at least n (int64), counts of 2 n + 1, bits (uint64) of n // 64 + 1.
    Raises if a pixel is left unlabelled (the component is not 4-connected, or has no boundary marker)."""
    n = 0
    for k in range(marks.shape[0]):
        p = marks[k]
        ukey[n] = order_key(flat_bits[p])
        upix[n] = p
        n += 1
    for k in range(free.shape[0]):
        p = free[k]
        ukey[n] = order_key(flat_bits[p])
        upix[n] = p
        n += 1
    sort_by_key(ukey[:n], upix[:n], skey, spix, counts)
    nw = (n + 63) >> 6
    bw = bits[:nw]
    bw[:] = 0
    ties = False
    for i in range(n):
        p = spix[i]
        if flat_out[p] == 0:
            flat_out[p] = -(i + 1)  # free: its rank, until pushed
        else:  # a boundary marker: queued from the start, age 0
            bw[i >> 6] |= _ONE << np.uint64(i & 63)
            age[i] = 0
        if i > 0 and skey[i] == skey[i - 1]:
            ties = True
    inv_w = 1.0 / w
    level_end = -1  # last rank whose value is <= the current level
    head = 0
    tail = 0
    n_block = 0  # a tie block's queued ranks, in age order, wait in age[...] slots of `pend`
    i_block = 0
    pend = ukey  # free again: reused for the tie block's ranks
    pushed = 0
    while True:
        if i_block < n_block:
            p = spix[pend[i_block]]
            i_block += 1
        elif head < tail:
            p = fifo[head]
            head += 1
        else:
            wi = (level_end + 1) >> 6
            if wi >= nw:
                break
            word = bw[wi] & (~np.uint64(0) << np.uint64((level_end + 1) & 63))
            while word == 0 and wi + 1 < nw:
                wi += 1
                word = bw[wi]
            if word == 0:
                break
            r = (wi << 6) + ctz64(np.int64(word))
            bw[wi] &= ~(_ONE << np.uint64(r & 63))
            level_end = r
            p = spix[r]
            if ties and r + 1 < n and skey[r + 1] == skey[r]:  # a tie block: its queued items by age
                e = r + 1
                while e < n and skey[e] == skey[r]:
                    e += 1
                n_block = 0
                for j in range(r, e):
                    if j == r or (bw[j >> 6] >> np.uint64(j & 63)) & _ONE:
                        bw[j >> 6] &= ~(_ONE << np.uint64(j & 63))
                        a = age[j]
                        t = n_block
                        while t > 0 and age[pend[t - 1]] > a:
                            pend[t] = pend[t - 1]
                            t -= 1
                        pend[t] = j
                        n_block += 1
                level_end = e - 1
                p = spix[pend[0]]
                i_block = 1
        lab = flat_out[p]
        r0, c0 = split_index(p, w, inv_w)
        # Neighbours written out in the loop, as in `flood.flood` (a helper made Numba's flood slower).
        for k in range(4):
            if k == 0:
                if r0 == 0:
                    continue
                q = p - w
            elif k == 1:
                if c0 == 0:
                    continue
                q = p - 1
            elif k == 2:
                if c0 == w - 1:
                    continue
                q = p + 1
            else:
                if r0 == h - 1:
                    continue
                q = p + w
            v = flat_out[q]
            if v >= 0:  # labelled, or off the mask (0)
                continue
            rq = -np.int64(v) - 1
            flat_out[q] = lab
            pushed += 1
            if rq <= level_end:  # own value at or below the level: pushed at the level
                fifo[tail] = q
                tail += 1
            else:
                bw[rq >> 6] |= _ONE << np.uint64(rq & 63)
                age[rq] = pushed
    if pushed != n - marks.shape[0]:  # a rank left in the label map would be a negative label
        raise ValueError("flood_ranked: pixels unreachable from the component's boundary markers")
