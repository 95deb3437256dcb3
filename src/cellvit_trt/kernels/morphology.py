"""Numba connected components, small-object removal and hole filling with scipy.ndimage semantics.

- `label4_filtered` equals `scipy.ndimage.label` (default cross structure = 4-connectivity) followed by
  upstream's `remove_small_objects(labels, min_size)` (components with size < min_size zeroed): labels are
  numbered in raster order of each component's first pixel, as scipy numbers them, and removed labels leave
  gaps, as upstream. `label4_components` also returns each kept component's pixels.
- `fill_holes4` equals `scipy.ndimage.binary_fill_holes` (default structure): background not 4-connected to
  the image border becomes foreground.
All kernels are O(H*W) with explicit stacks and release the GIL.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["label4_filtered", "fill_holes4"]


@njit(nogil=True, cache=True)
def label4_components(binary: np.ndarray, min_size: int):
    """(labels int32 [H,W], members int64 [P], start int64 [n_labels+2]).

    `labels` as `label4_filtered`; the pixels (flat indices) of kept label k are members[start[k]:start[k+1]]
    (empty ranges for removed labels), so later passes can visit the foreground only.
    """
    h, w = binary.shape
    npx = h * w
    labels = np.zeros((h, w), np.int32)  # zeroed lazily by the OS: only pages near foreground get touched
    flat = labels.reshape(-1)
    flat_bin = binary.reshape(-1)
    n8 = npx // 8
    words = flat_bin[: n8 * 8].view(np.uint64)  # skip background 8 pixels at a time
    members = np.empty(npx, np.int64)  # kept components' pixels (untouched pages cost nothing)
    removed = np.empty(npx, np.int64)  # removed components' pixels, reset to 0 at the end
    comp_size = np.empty(npx // 2 + 2, np.int64)
    n_kept_px = 0
    n_removed_px = 0
    next_label = 0
    p0 = 0
    while p0 < npx:
        if (p0 & 7) == 0 and (p0 >> 3) < n8 and words[p0 >> 3] == 0:
            p0 += 8
            continue
        if flat_bin[p0] == 0 or flat[p0] != 0:
            p0 += 1
            continue
        next_label += 1
        flat[p0] = next_label
        base = n_kept_px
        members[base] = p0
        size = 1
        k = base
        while k < base + size:  # breadth-first, the member list doubles as the queue
            p = members[k]
            k += 1
            r = p // w
            c = p - r * w
            if r > 0 and flat_bin[p - w] != 0 and flat[p - w] == 0:
                flat[p - w] = next_label
                members[base + size] = p - w
                size += 1
            if c > 0 and flat_bin[p - 1] != 0 and flat[p - 1] == 0:
                flat[p - 1] = next_label
                members[base + size] = p - 1
                size += 1
            if c < w - 1 and flat_bin[p + 1] != 0 and flat[p + 1] == 0:
                flat[p + 1] = next_label
                members[base + size] = p + 1
                size += 1
            if r < h - 1 and flat_bin[p + w] != 0 and flat[p + w] == 0:
                flat[p + w] = next_label
                members[base + size] = p + w
                size += 1
        if size < min_size:
            for m in range(base, base + size):
                flat[members[m]] = -1  # visited but removed
                removed[n_removed_px] = members[m]
                n_removed_px += 1
            comp_size[next_label] = 0
        else:
            comp_size[next_label] = size
            n_kept_px += size
        p0 += 1
    start = np.zeros(next_label + 2, np.int64)
    for lab in range(1, next_label + 1):
        start[lab + 1] = start[lab] + comp_size[lab]
    for m in range(n_removed_px):
        flat[removed[m]] = 0
    return labels, members[:n_kept_px], start


@njit(nogil=True, cache=True)
def label4_filtered(binary: np.ndarray, min_size: int) -> np.ndarray:
    """int32 labels of the 4-connected components of `binary` != 0, components < min_size set to 0."""
    return label4_components(binary, min_size)[0]


@njit(nogil=True, cache=True)
def fill_holes4(binary: np.ndarray) -> np.ndarray:
    """uint8 copy of `binary` != 0 with every background region not 4-connected to the border filled.

    Scan-line flood of the outside background from the border: each span is filled at once and seeds one
    entry per free run in the rows above and below, so the big open background costs a few sequential passes.
    A fill seeds at most (span length + 1) entries, so 2*H*W + border entries bound the stack (pages that are
    never touched cost nothing).
    """
    h, w = binary.shape
    outside = np.zeros((h, w), np.uint8)
    stack = np.empty(2 * h * w + 4 * (h + w) + 8, np.int64)
    top = 0
    for c in range(w):
        if binary[0, c] == 0:
            stack[top] = c
            top += 1
        if binary[h - 1, c] == 0:
            stack[top] = (h - 1) * w + c
            top += 1
    for r in range(h):
        if binary[r, 0] == 0:
            stack[top] = r * w
            top += 1
        if binary[r, w - 1] == 0:
            stack[top] = r * w + w - 1
            top += 1
    while top > 0:
        top -= 1
        r = stack[top] // w
        c = stack[top] - r * w
        if outside[r, c] != 0 or binary[r, c] != 0:
            continue
        left = c
        while left > 0 and binary[r, left - 1] == 0 and outside[r, left - 1] == 0:
            left -= 1
        right = c
        while right < w - 1 and binary[r, right + 1] == 0 and outside[r, right + 1] == 0:
            right += 1
        for x in range(left, right + 1):
            outside[r, x] = 1
        for d in range(2):
            rr = r - 1 + 2 * d
            if rr < 0 or rr >= h:
                continue
            in_run = False
            for x in range(left, right + 1):
                free = binary[rr, x] == 0 and outside[rr, x] == 0
                if free and not in_run:
                    stack[top] = rr * w + x
                    top += 1
                in_run = free
    out = np.empty((h, w), np.uint8)
    for r in range(h):
        for c in range(w):
            out[r, c] = 1 - outside[r, c]
    return out
