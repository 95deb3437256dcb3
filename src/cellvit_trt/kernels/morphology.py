"""Numba connected components, small-object removal and hole filling with scipy.ndimage semantics.

- `label4_filtered` equals `scipy.ndimage.label` (default cross structure = 4-connectivity) followed by
  upstream's `remove_small_objects(labels, min_size)` (components with size < min_size zeroed): labels are
  numbered in raster order of each component's first pixel, as scipy numbers them, and removed labels leave
  gaps, as upstream. `label4_components` also returns each kept component's pixels. Both work on the row
  runs of the map (found skipping empty 8-pixel words), so their cost follows the foreground, not the tile.
- `fill_holes4` equals `scipy.ndimage.binary_fill_holes` (default structure): background not 4-connected to
  the image border becomes foreground.
All kernels release the GIL.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from cellvit_trt.kernels.layout import row_runs

__all__ = [
    "label4_components",
    "label4_from_runs",
    "label4_runs_into",
    "kept_runs",
    "label4_filtered",
    "fill_holes4",
]


@njit(nogil=True, cache=True)
def _root(parent, a):
    while parent[a] != a:
        parent[a] = parent[parent[a]]
        a = parent[a]
    return a


@njit(nogil=True, cache=True)
def label4_from_runs(binary: np.ndarray, min_size: int, row_ptr, c0s, c1s):
    """`label4_runs_into` a fresh zeroed map."""
    members = np.empty(max(1, int((c1s - c0s).sum())), np.int64)  # room for every run pixel
    return label4_runs_into(binary, min_size, row_ptr, c0s, c1s, np.zeros(binary.shape, np.int32), members)


@njit(nogil=True, cache=True)
def label4_runs_into(binary: np.ndarray, min_size: int, row_ptr, c0s, c1s, labels, members_buf):
    """`label4_components` into `labels` (int32 [H, W], zero on entry; written on the kept runs only) from
    the row runs of `binary` (`layout.row_runs`): runs of consecutive rows that
    share a column are one component (union-find on runs), components are numbered in the order of their
    first run (= raster order of their first pixel, as scipy numbers them), and each kept component's pixels
    are listed in raster order into `members_buf` (int64, room for every pixel; an empty array: not
    listed, `members` then comes back empty). Costs O(runs + foreground pixels)."""
    h, w = binary.shape
    n_runs = c0s.shape[0]
    parent = np.arange(n_runs)
    for r in range(1, h):
        j = row_ptr[r - 1]
        for i in range(row_ptr[r], row_ptr[r + 1]):
            while j < row_ptr[r] and c1s[j] <= c0s[i]:  # runs above ending before this one starts
                j += 1
            k = j
            while k < row_ptr[r] and c0s[k] < c1s[i]:  # overlapping columns: 4-connected
                a = _root(parent, i)
                b = _root(parent, k)
                if a != b:
                    parent[max(a, b)] = min(a, b)
                k += 1
    label_of = np.zeros(n_runs, np.int32)  # label of each root run
    size = np.zeros(n_runs + 1, np.int64)  # pixels per label
    n_labels = 0
    for i in range(n_runs):
        root = _root(parent, i)
        if root == i:
            n_labels += 1
            label_of[i] = n_labels
        lab = label_of[root]
        label_of[i] = lab
        size[lab] += c1s[i] - c0s[i]
    start = np.zeros(n_labels + 2, np.int64)
    for lab in range(1, n_labels + 1):
        start[lab + 1] = start[lab] + (size[lab] if size[lab] >= min_size else 0)
    fill = start.copy()
    listed = members_buf.shape[0] > 0
    members = members_buf[: start[n_labels + 1] if listed else 0]
    for r in range(h):
        for i in range(row_ptr[r], row_ptr[r + 1]):
            lab = label_of[i]
            if size[lab] < min_size:
                continue
            seg = labels[r, c0s[i] : c1s[i]]
            if listed:
                base = r * w
                f = fill[lab]
                for c in range(c0s[i], c1s[i]):
                    members[f] = base + c
                    f += 1
                fill[lab] = f
            for c in range(seg.shape[0]):
                seg[c] = lab
    return labels, members, start


@njit(nogil=True, cache=True)
def kept_runs(labels, row_ptr, c0s, c1s):
    """The runs (`layout.row_runs`) that lie in a kept component of `labels` (nonzero there)."""
    h = labels.shape[0]
    keep = np.zeros(c0s.shape[0], np.bool_)
    for r in range(h):
        for i in range(row_ptr[r], row_ptr[r + 1]):
            keep[i] = labels[r, c0s[i]] != 0
    out_ptr = np.zeros(h + 1, np.int64)
    n = 0
    for r in range(h):
        for i in range(row_ptr[r], row_ptr[r + 1]):
            n += keep[i]
        out_ptr[r + 1] = n
    idx = np.flatnonzero(keep)
    return out_ptr, c0s[idx], c1s[idx]


@njit(nogil=True, cache=True)
def label4_components(binary: np.ndarray, min_size: int):
    """(labels int32 [H,W], members int64 [P], start int64 [n_labels+2]).

    `labels` as `label4_filtered`; the pixels (flat indices) of kept label k are members[start[k]:start[k+1]]
    (empty ranges for removed labels), so later passes can visit the foreground only.
    """
    return label4_from_runs(binary, min_size, *row_runs(binary))


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
