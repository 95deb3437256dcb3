"""Where the foreground is: its runs in each row, its 8-connected groups and their boxes.

The region-restricted post-processor (docs/kernels.md, "Regions") evaluates each per-pixel step only where
its result can reach the foreground. This module derives that geometry:

- `row_runs` / `cover_runs`: the runs of foreground pixels in each row, and few long runs covering them
  (the Sobel, the energy and the relief are needed at the foreground only);
- `fg_groups`: the 8-connected groups of 4-connected foreground components (components that touch only
  diagonally join one group) and each group's bounding box. A hole of the marker map is enclosed by an
  8-connected ring of marker pixels, markers lie inside the foreground, so every hole lies inside the box
  of one group: hole filling runs inside those boxes only.
"""

from __future__ import annotations

import sys

import numpy as np
from numba import njit
from numba.cpython.unsafe.numbers import trailing_zeros

__all__ = ["row_runs", "cover_runs", "cover_runs_into", "clear_runs", "whole_rows", "fg_groups"]


if sys.byteorder != "little":  # the word scans below read pixel k of a word as its byte k
    raise ImportError("cellvit_trt.kernels needs a little-endian CPU (x86-64, aarch64)")
_LOW7 = np.uint64(0x7F7F7F7F7F7F7F7F)
_HIGH = np.uint64(0x8080808080808080)


@njit(nogil=True, cache=True)
def _nonzero_bytes(v):
    """The high bit of each byte of v set where that byte is nonzero (no carries cross bytes)."""
    return (((v & _LOW7) + _LOW7) | v) & _HIGH


@njit(nogil=True, cache=True)
def _next_set(fb, words, p, end):
    """First index in [p, end) with fb != 0, else end. Reads the 8-pixel word holding p whole (its bytes
    below p shifted out: pixels are little-endian bytes), so a run costs a few word reads whatever its
    alignment; pixels one by one only where a word would reach past `end`."""
    while p < end:
        wi = p >> 3
        if (wi << 3) + 8 <= end and wi < words.shape[0]:
            t = _nonzero_bytes(words[wi]) >> np.uint64((p & 7) << 3)
            if t != 0:
                return p + (trailing_zeros(t) >> 3)
            wi += 1
            last = min(words.shape[0], end >> 3)  # words wholly before `end`
            while wi < last and words[wi] == 0:  # empty background: one compare per 8 pixels
                wi += 1
            p = wi << 3
            continue
        if fb[p] != 0:
            return p
        p += 1
    return end


@njit(nogil=True, cache=True)
def _next_clear(fb, words, p, end):
    """First index in [p, end) with fb == 0, else end; like `_next_set` (a word without a zero byte, as most
    inside a nucleus, is passed whole)."""
    while p < end:
        wi = p >> 3
        if (wi << 3) + 8 <= end and wi < words.shape[0]:
            z = (~_nonzero_bytes(words[wi]) & _HIGH) >> np.uint64((p & 7) << 3)
            if z != 0:
                return p + (trailing_zeros(z) >> 3)
            p = (wi + 1) << 3
            continue
        if fb[p] == 0:
            return p
        p += 1
    return end


@njit(nogil=True, cache=True)
def row_runs(binary: np.ndarray):
    """Maximal runs of nonzero pixels in each row: (row_ptr int64[H+1], c0 int64[N], c1 int64[N]); the runs
    of row r are [row_ptr[r], row_ptr[r+1]), as column intervals [c0, c1) in increasing order. One pass
    that skips empty 8-pixel words, so a sparse map costs little."""
    h, w = binary.shape
    fb = binary.reshape(-1)
    n8 = fb.shape[0] // 8
    words = fb[: n8 * 8].view(np.uint64)
    row_ptr = np.zeros(h + 1, np.int64)
    c0 = np.empty(1024, np.int64)
    c1 = np.empty(1024, np.int64)
    n = 0
    for r in range(h):
        base = r * w
        end = base + w
        p = _next_set(fb, words, base, end)
        while p < end:
            q = _next_clear(fb, words, p, end)
            if n == c0.shape[0]:
                g0 = np.empty(2 * n, np.int64)
                g1 = np.empty(2 * n, np.int64)
                g0[:n] = c0
                g1[:n] = c1
                c0 = g0
                c1 = g1
            c0[n] = p - base
            c1[n] = q - base
            n += 1
            p = _next_set(fb, words, q, end)
        row_ptr[r + 1] = n
    return row_ptr, c0[:n], c1[:n]


@njit(nogil=True, cache=True)
def whole_rows(row_ptr, c0s, c1s, w: int) -> bool:
    """True when the row runs are every row whole (one run [0, w) per row)."""
    h = row_ptr.shape[0] - 1
    if row_ptr[h] != h:
        return False
    for r in range(h):
        if row_ptr[r + 1] != r + 1 or c0s[r] != 0 or c1s[r] != w:
            return False
    return True


@njit(nogil=True, cache=True)
def clear_runs(arr, row_ptr, c0s, c1s):
    """arr[r, c0:c1] = 0 on the given row runs (undoes a write restricted to them)."""
    for r in range(arr.shape[0]):
        for i in range(row_ptr[r], row_ptr[r + 1]):
            arr[r, c0s[i] : c1s[i]] = 0


@njit(nogil=True, cache=True)
def cover_runs(h: int, w: int, row_ptr, c0s, c1s, gap: int, full_row: float):
    """`cover_runs_into` a fresh map."""
    return cover_runs_into(np.zeros((h, w), np.uint8), row_ptr, c0s, c1s, gap, full_row)


@njit(nogil=True, cache=True)
def cover_runs_into(cover, row_ptr, c0s, c1s, gap: int, full_row: float):
    """uint8 [h, w] map covering the row runs given (`row_runs`) with few long runs: rows taken in pairs
    (0, 1), (2, 3), ... whose runs are united, the gaps shorter than `gap` (>= 8) closed and the widths
    rounded up to 8, the same runs for both rows of a pair, and both rows whole where the runs of either
    cover at least `full_row` of it. Per-pixel work on it costs less than on many short runs (each costs a
    few loop set-ups), and the exact Sobel filters two rows with the same runs in one pass
    (`local_sobel.exact_runs`). Returns (cover, its pixel count, its row runs as `row_runs` gives them: the
    widened runs stay disjoint and apart, since widening moves an end by at most 7 pixels). `cover` is zero
    on entry."""
    h, w = cover.shape
    out_ptr = np.zeros(h + 1, np.int64)
    out0 = np.empty(2 * c0s.shape[0] + 2, np.int64)
    out1 = np.empty(2 * c0s.shape[0] + 2, np.int64)
    n = 0
    n_cover = 0
    for top in range(0, h, 2):
        last_row = min(top + 1, h - 1)
        first = row_ptr[top]
        last = row_ptr[last_row + 1]
        if first == last:  # neither row has a run
            for r in range(top, last_row + 1):
                out_ptr[r + 1] = n
            continue
        whole = False
        for r in range(top, last_row + 1):
            covered = 0
            for i in range(row_ptr[r], row_ptr[r + 1]):
                covered += c1s[i] - c0s[i]
            whole |= row_ptr[r + 1] > row_ptr[r] and covered >= full_row * w
        pair_start = n
        if whole:
            out0[n] = 0
            out1[n] = w
            n += 1
        else:
            i = row_ptr[top]  # the two rows' runs, merged in column order (each row's are sorted)
            j = end_i = row_ptr[top + 1]  # the second row's runs (none when top is the last row)
            end_j = last
            start = -1
            end = -1
            while i < end_i or j < end_j:
                if j >= end_j or (i < end_i and c0s[i] <= c0s[j]):
                    a, b = c0s[i], c1s[i]
                    i += 1
                else:
                    a, b = c0s[j], c1s[j]
                    j += 1
                if start >= 0 and a - end < gap:
                    end = max(end, b)
                    continue
                if start >= 0:
                    out0[n], out1[n] = _round8(start, end, w)
                    n += 1
                start = a
                end = b
            out0[n], out1[n] = _round8(start, end, w)
            n += 1
        n_pair = n - pair_start
        for r in range(top, last_row + 1):
            if r > top:  # the same runs again for the second row
                for k in range(n_pair):
                    out0[n + k] = out0[pair_start + k]
                    out1[n + k] = out1[pair_start + k]
                n += n_pair
            for k in range(n - n_pair, n):
                cover[r, out0[k] : out1[k]] = 1
                n_cover += out1[k] - out0[k]
            out_ptr[r + 1] = n
    return cover, n_cover, (out_ptr, out0[:n], out1[:n])


@njit(nogil=True, cache=True, inline="always")
def _round8(start, end, w):
    """[start, end) widened to a multiple of 8 pixels inside [0, w): vector loops then need no scalar tail."""
    end = min(w, start + (end - start + 7) // 8 * 8)
    start = max(0, end - (end - start + 7) // 8 * 8)
    return start, end


@njit(nogil=True, cache=True)
def _find(parent: np.ndarray, a: int) -> int:
    while parent[a] != a:
        parent[a] = parent[parent[a]]
        a = parent[a]
    return a


@njit(nogil=True, cache=True)
def _union(parent, a, b):
    a = _find(parent, a)
    b = _find(parent, b)
    if a != b:
        parent[max(a, b)] = min(a, b)


@njit(nogil=True, cache=True)
def fg_groups(labels: np.ndarray, n_labels: int, row_ptr, c0s, c1s):
    """8-connected groups of the 4-connected components `labels` (1..n_labels, 0 = none), from the row runs
    of a map covering them (each run lies in one component or none): (group int32[n_labels+1], 0 for
    labels without pixels; boxes int64[n_groups, 4] = (r0, c0, r1, c1), exclusive ends)."""
    h = labels.shape[0]
    n_runs = c0s.shape[0]
    run_lab = np.empty(n_runs, np.int64)  # each run's label, read once (the map is a cache miss per run)
    for r in range(h):
        for i in range(row_ptr[r], row_ptr[r + 1]):
            run_lab[i] = labels[r, c0s[i]]
    parent = np.arange(n_labels + 1)
    for r in range(h - 1):
        j = row_ptr[r + 1]
        for i in range(row_ptr[r], row_ptr[r + 1]):
            a = run_lab[i]
            if a == 0:
                continue
            while j < row_ptr[r + 2] and c1s[j] < c0s[i]:  # runs of the next row ending before this one
                j += 1
            k = j
            while k < row_ptr[r + 2] and c0s[k] <= c1s[i]:  # 8-adjacent: [c0-1, c1] overlaps
                b = run_lab[k]
                if b != 0 and b != a:
                    _union(parent, a, b)
                k += 1
    group = np.zeros(n_labels + 1, np.int32)
    present = np.zeros(n_labels + 1, np.bool_)
    for i in range(n_runs):
        present[run_lab[i]] = True
    n_groups = 0
    for cp in range(1, n_labels + 1):
        if not present[cp]:
            continue
        root = _find(parent, cp)
        if group[root] == 0:
            n_groups += 1
            group[root] = n_groups
        group[cp] = group[root]
    boxes = np.empty((n_groups, 4), np.int64)
    boxes[:, 0] = h
    boxes[:, 1] = labels.shape[1]
    boxes[:, 2] = 0
    boxes[:, 3] = 0
    for r in range(h):
        for i in range(row_ptr[r], row_ptr[r + 1]):
            g = group[run_lab[i]] - 1
            if g < 0:
                continue
            boxes[g, 0] = min(boxes[g, 0], r)
            boxes[g, 1] = min(boxes[g, 1], c0s[i])
            boxes[g, 2] = max(boxes[g, 2], r + 1)
            boxes[g, 3] = max(boxes[g, 3], c1s[i])
    return group, boxes
