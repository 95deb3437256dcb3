"""Marker-controlled watershed, a Numba port of skimage.segmentation.watershed's priority flood.

Semantics reproduced exactly for the call upstream makes (`watershed(image, markers, mask=mask)`: connectivity 1,
compactness 0, no watershed line), in skimage 0.19-0.26:

- markers outside the mask are dropped (`markers * mask`);
- marker pixels enter a binary min-heap in raster order with priority (image value, age 0);
- a popped pixel labels each unlabelled in-mask 4-neighbour, visited in the order up, left, right, down,
  at push time, with priority (max(neighbour value, popped value), age) and a global age counter incremented
  before every push;
- the heap is the same array binary heap (sift-up on push; on pop the last item moves to the root and sifts down,
  preferring the left child on ties) with the same strict "smaller" test (value, then age), so even the
  order among equal-priority markers, which depends on heap mechanics, is the same.
Same pop order, same labels, bit for bit.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["watershed_masked"]

_AGE_SHIFT = 32
_IDX_MASK = (1 << 32) - 1


@njit(nogil=True, cache=True, inline="always")
def _smaller(values, keys, a, b):
    va = values[a]
    vb = values[b]
    if va != vb:
        return va < vb
    return (keys[a] >> 32) < (keys[b] >> 32)


@njit(nogil=True, cache=True, inline="always")
def _swap(values, keys, a, b):
    tv = values[a]
    values[a] = values[b]
    values[b] = tv
    tk = keys[a]
    keys[a] = keys[b]
    keys[b] = tk


@njit(nogil=True, cache=True, inline="always")
def _push(values, keys, n, value, key):
    child = n
    values[child] = value
    keys[child] = key
    while child > 0:
        parent = (child + 1) // 2 - 1
        if _smaller(values, keys, child, parent):
            _swap(values, keys, parent, child)
            child = parent
        else:
            break
    return n + 1


@njit(nogil=True, cache=True, inline="always")
def _sift_down(values, keys, n):
    i = 0
    smallest = 0
    while True:
        left = 2 * i + 1
        right = left + 1
        if left < n:
            if _smaller(values, keys, left, i):
                smallest = left
            if right < n and _smaller(values, keys, right, smallest):
                smallest = right
        else:
            break
        if smallest == i:
            break
        _swap(values, keys, i, smallest)
        i = smallest


@njit(nogil=True, cache=True)
def watershed_masked(image: np.ndarray, markers: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """int32 labels: `markers` (int32, 0 = none) flooded over `image` (float64) inside `mask` (!= 0)."""
    h, w = image.shape
    npx = h * w
    out = np.zeros((h, w), np.int32)
    flat_out = out.reshape(-1)
    flat_img = image.reshape(-1)
    flat_mask = mask.reshape(-1)
    flat_mark = markers.reshape(-1)
    n_seed = 0
    n_mask = 0
    for p in range(npx):
        if flat_mask[p] != 0:
            n_mask += 1
            if flat_mark[p] != 0:
                flat_out[p] = flat_mark[p]
                n_seed += 1
    capacity = n_seed + n_mask + 1
    values = np.empty(capacity, np.float64)
    keys = np.empty(capacity, np.int64)
    n = 0
    for p in range(npx):
        if flat_out[p] != 0:
            n = _push(values, keys, n, flat_img[p], np.int64(p))  # age 0
    age = np.int64(1)
    while n > 0:
        value = values[0]
        p = keys[0] & _IDX_MASK
        n -= 1
        if n > 0:
            _swap(values, keys, 0, n)
            _sift_down(values, keys, n)
        lab = flat_out[p]
        r = p // w
        c = p - r * w
        for k in range(4):
            if k == 0:
                if r == 0:
                    continue
                q = p - w
            elif k == 1:
                if c == 0:
                    continue
                q = p - 1
            elif k == 2:
                if c == w - 1:
                    continue
                q = p + 1
            else:
                if r == h - 1:
                    continue
                q = p + w
            if flat_mask[q] == 0 or flat_out[q] != 0:
                continue
            age += 1
            nv = flat_img[q]
            flat_out[q] = lab
            if nv < value:
                nv = value
            n = _push(values, keys, n, nv, (age << _AGE_SHIFT) | q)
    return out
