"""Marker clean-up (upstream `_proc_np_hv` step 6) inside the foreground groups' boxes only.

- Hole filling (`scipy.ndimage.binary_fill_holes`, 4-connected background): a hole is a 4-connected set of
  non-marker pixels cut off from the tile border; what cuts it off is an 8-connected set of marker pixels
  (digital Jordan / Janiszewski: disjoint sets that separately separate nothing do not together), and marker
  pixels lie in the foreground, so the holes of the tile are the union over 8-connected foreground groups G
  of the holes of (markers in G), and those lie in G's bounding box. `fill_groups` floods each box (grown
  by one pixel, whose rim is outside) from its rim.
- Opening (`cv2.morphologyEx(MORPH_OPEN)`, a symmetric element, OpenCV's borders: outside the tile counts as
  set for the erosion, unset for the dilation) is anti-extensive, so it is nonzero only inside the boxes:
  `open_runs` computes it on runs of blocks meeting the boxes, from the filled map 2 + 2 pixels around.
- Labelling (`scipy.ndimage.label`, raster numbering, then upstream's `remove_small_objects`) visits the same
  runs in raster order, so the numbers are those of a whole-tile scan.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["fill_groups", "open_runs", "label_runs", "watershed_seeds"]


@njit(nogil=True, cache=True)
def fill_groups(marker, labels, group, boxes, filled):
    """filled |= marker and holes, group by group (see module doc). `labels` the foreground components,
    `group[label]` their 8-connected group (1-based), `boxes` the groups' (r0, c0, r1, c1)."""
    h, w = marker.shape
    biggest = 0
    for g in range(boxes.shape[0]):
        area = (min(boxes[g, 2] + 1, h) - max(boxes[g, 0] - 1, 0)) * (min(boxes[g, 3] + 1, w) - max(boxes[g, 1] - 1, 0))
        biggest = max(biggest, area)
    state = np.empty(biggest, np.uint8)  # 1 barrier (this group's marker), 0 free, 2 reached from the rim
    stack = np.empty(biggest, np.int64)
    for g in range(boxes.shape[0]):
        r0 = max(boxes[g, 0] - 1, 0)
        c0 = max(boxes[g, 1] - 1, 0)
        r1 = min(boxes[g, 2] + 1, h)
        c1 = min(boxes[g, 3] + 1, w)
        bh = r1 - r0
        bw = c1 - c0
        for r in range(bh):
            for c in range(bw):
                lab = labels[r0 + r, c0 + c]
                state[r * bw + c] = 1 if marker[r0 + r, c0 + c] != 0 and group[lab] == g + 1 else 0
        top = 0
        for r in range(bh):
            for c in range(bw):
                if (r == 0 or c == 0 or r == bh - 1 or c == bw - 1) and state[r * bw + c] == 0:
                    state[r * bw + c] = 2
                    stack[top] = r * bw + c
                    top += 1
        while top > 0:
            top -= 1
            q = stack[top]
            r = q // bw
            c = q - r * bw
            if r > 0 and state[q - bw] == 0:
                state[q - bw] = 2
                stack[top] = q - bw
                top += 1
            if c > 0 and state[q - 1] == 0:
                state[q - 1] = 2
                stack[top] = q - 1
                top += 1
            if c < bw - 1 and state[q + 1] == 0:
                state[q + 1] = 2
                stack[top] = q + 1
                top += 1
            if r < bh - 1 and state[q + bw] == 0:
                state[q + bw] = 2
                stack[top] = q + bw
                top += 1
        for r in range(bh):
            for c in range(bw):
                if state[r * bw + c] != 2:
                    filled[r0 + r, c0 + c] = 1


@njit(nogil=True, cache=True)
def open_runs(filled, runs, block, offsets, opened):
    """opened = dilate(erode(filled)) on the block runs (block row, first col, end col), element `offsets`
    (int64 [K, 2] of (dy, dx), symmetric), OpenCV's default borders."""
    h, w = filled.shape
    reach = 0
    for k in range(offsets.shape[0]):
        reach = max(reach, abs(offsets[k, 0]), abs(offsets[k, 1]))
    m = 2 * reach
    for i in range(runs.shape[0]):
        r0 = runs[i, 0] * block
        r1 = min(h, r0 + block)
        c0 = runs[i, 1] * block
        c1 = min(w, runs[i, 2] * block)
        ph = r1 - r0 + 2 * m
        pw = c1 - c0 + 2 * m
        src = np.ones((ph, pw), np.uint8)  # outside the tile: set (erosion keeps)
        for r in range(ph):
            rr = r0 - m + r
            if rr < 0 or rr >= h:
                continue
            lo = max(0, m - c0)
            hi = min(pw, w - c0 + m)
            s = filled[rr, c0 - m + lo : c0 - m + hi]
            d = src[r, lo:hi]
            for c in range(hi - lo):
                d[c] = s[c]
        ero = np.zeros((ph, pw), np.uint8)  # eroded on the inner (ph - 2 reach) x (pw - 2 reach) window
        for r in range(reach, ph - reach):
            rr = r0 - m + r
            if rr < 0 or rr >= h:
                continue  # outside the tile: unset (dilation ignores)
            lo = max(reach, m - c0)
            hi = min(pw - reach, w - c0 + m)
            e = ero[r, lo:hi]
            for c in range(hi - lo):
                e[c] = 1
            for k in range(offsets.shape[0]):
                s = src[r + offsets[k, 0], lo + offsets[k, 1] : hi + offsets[k, 1]]
                for c in range(hi - lo):
                    e[c] &= s[c]
        for r in range(m, ph - m):
            o = opened[r0 - m + r, c0:c1]
            for c in range(c1 - c0):
                o[c] = 0
            for k in range(offsets.shape[0]):
                s = ero[r + offsets[k, 0], m + offsets[k, 1] : m + offsets[k, 1] + c1 - c0]
                for c in range(c1 - c0):
                    o[c] |= s[c]


@njit(nogil=True, cache=True)
def _row_index(runs, h, block):
    """Runs of block row br are runs[row_start[br]:row_start[br + 1]] (runs sorted by block row)."""
    n_br = (h + block - 1) // block
    row_start = np.full(n_br + 1, runs.shape[0], np.int64)
    for i in range(runs.shape[0] - 1, -1, -1):
        row_start[runs[i, 0]] = i
    for br in range(n_br - 1, -1, -1):
        row_start[br] = min(row_start[br], row_start[br + 1])
    return row_start


@njit(nogil=True, cache=True)
def label_runs(binary, runs, block, min_size):
    """4-connected labels of `binary` (nonzero only inside the block runs), numbered in raster order of each
    component's first pixel as scipy.ndimage.label, components < min_size zeroed (numbers kept, as upstream).
    Returns (labels int32 [H, W], number of labels incl. removed ones)."""
    h, w = binary.shape
    labels = np.zeros((h, w), np.int32)
    fl = labels.reshape(-1)
    fb = binary.reshape(-1)
    queue = np.empty(64, np.int64)
    row_start = _row_index(runs, h, block)
    n = 0
    for r in range(h):
        br = r // block
        for i in range(row_start[br], row_start[br + 1]):
            for c in range(runs[i, 1] * block, min(w, runs[i, 2] * block)):
                p0 = r * w + c
                if fb[p0] == 0 or fl[p0] != 0:
                    continue
                n += 1
                fl[p0] = n
                queue[0] = p0
                size = 1
                k = 0
                while k < size:
                    p = queue[k]
                    k += 1
                    pr = p // w
                    pc = p - pr * w
                    for d in range(4):
                        if d == 0:
                            if pr == 0:
                                continue
                            q = p - w
                        elif d == 1:
                            if pc == 0:
                                continue
                            q = p - 1
                        elif d == 2:
                            if pc == w - 1:
                                continue
                            q = p + 1
                        else:
                            if pr == h - 1:
                                continue
                            q = p + w
                        if fb[q] != 0 and fl[q] == 0:
                            fl[q] = n
                            if size == queue.shape[0]:
                                bigger = np.empty(2 * size, np.int64)
                                bigger[:size] = queue
                                queue = bigger
                            queue[size] = q
                            size += 1
                if size < min_size:
                    for j in range(size):
                        fl[queue[j]] = -1
    for r in range(h):
        br = r // block
        for i in range(row_start[br], row_start[br + 1]):
            seg = labels[r, runs[i, 1] * block : min(w, runs[i, 2] * block)]
            for c in range(seg.shape[0]):
                if seg[c] < 0:
                    seg[c] = 0
    return labels, n


@njit(nogil=True, cache=True)
def watershed_seeds(markers, n_labels, mask, runs, block):
    """Marker pixels inside `mask` in raster order (flat indices and labels), and cut[label]: the marker has
    pixels outside the mask. Markers are nonzero only inside the block runs."""
    h, w = markers.shape
    row_start = _row_index(runs, h, block)
    cut = np.zeros(n_labels + 1, np.bool_)
    count = 0
    for r in range(h):
        br = r // block
        for i in range(row_start[br], row_start[br + 1]):
            for c in range(runs[i, 1] * block, min(w, runs[i, 2] * block)):
                if markers[r, c] != 0 and mask[r, c] != 0:
                    count += 1
    pix = np.empty(count, np.int64)
    n = 0
    for r in range(h):
        br = r // block
        for i in range(row_start[br], row_start[br + 1]):
            for c in range(runs[i, 1] * block, min(w, runs[i, 2] * block)):
                lab = markers[r, c]
                if lab == 0:
                    continue
                if mask[r, c] != 0:
                    pix[n] = r * w + c
                    n += 1
                else:
                    cut[lab] = True
    return pix, cut
