"""The binary heap of skimage's watershed (skimage/segmentation/heap_general.pxi), replicated exactly.

Items are (value float64, key int64 = age << 32 | flat pixel index), kept in two parallel arrays. "Smaller" is
strict: lower value, then lower age; equal items never move past each other. Push sifts up from the end; pop
moves the last item to the root and sifts down. Moving a hole instead of swapping gives the same layout, and
the child choice below is equivalent to skimage's for a strict weak order, so the layout, and with it the
order of equal-priority items, is skimage's.
"""

from __future__ import annotations

import numpy as np
from numba import njit

AGE_SHIFT = 32
IDX_MASK = (1 << 32) - 1


@njit(nogil=True, cache=True)
def smaller(values, keys, a, b):
    va = values[a]
    vb = values[b]
    if va != vb:
        return va < vb
    return (keys[a] >> 32) < (keys[b] >> 32)


@njit(nogil=True, cache=True)
def swap(values, keys, a, b):
    tv = values[a]
    values[a] = values[b]
    values[b] = tv
    tk = keys[a]
    keys[a] = keys[b]
    keys[b] = tk


@njit(nogil=True, cache=True)
def push(values, keys, n, value, key):
    """skimage's heappush: sift up while strictly smaller than the parent (hole moves instead of swaps)."""
    child = n
    age = key >> 32
    while child > 0:
        parent = (child + 1) // 2 - 1
        pv = values[parent]
        if value < pv or (value == pv and age < (keys[parent] >> 32)):
            values[child] = pv
            keys[child] = keys[parent]
            child = parent
        else:
            break
    values[child] = value
    keys[child] = key
    return n + 1


@njit(nogil=True, cache=True)
def sift_down(values, keys, n):
    """skimage's heappop repair after the last item moved to the root, with a branch-free child choice.

    skimage takes the left child if it is smaller than the item, then the right one if smaller than that;
    for a strict weak order this equals: pick the right child only if strictly smaller than the left, then
    move it up if strictly smaller than the item."""
    xv = values[0]
    xk = keys[0]
    xa = xk >> 32
    i = 0
    while True:
        left = 2 * i + 1
        if left >= n:
            break
        c = left
        right = left + 1
        if right < n:
            vl = values[left]
            vr = values[right]
            take_right = (vr < vl) | ((vr == vl) & ((keys[right] >> 32) < (keys[left] >> 32)))
            c = left + np.int64(take_right)
        vc = values[c]
        if vc < xv or (vc == xv and (keys[c] >> 32) < xa):
            values[i] = vc
            keys[i] = keys[c]
            i = c
        else:
            break
    values[i] = xv
    keys[i] = xk
