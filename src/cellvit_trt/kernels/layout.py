"""Where the foreground is: 16x16 blocks that hold foreground, 8-connected foreground groups and their boxes.

The region-restricted post-processor (docs/kernels.md, "Regions") evaluates each per-pixel step only where
its result can reach the foreground. This module derives the geometry from the kept foreground pixels
(`label4_components`):

- `fg_blocks`: blocks holding at least one foreground pixel (the Sobel, the energy and the relief are exact
  there, and needed nowhere else);
- `fg_groups`: the 8-connected groups of 4-connected foreground components (components that touch only
  diagonally join one group) and each group's bounding box. A hole of the marker map is enclosed by an
  8-connected ring of marker pixels, markers lie inside the foreground, so every hole lies inside the box
  of one group: hole filling and the opening run inside those boxes only;
- `box_blocks`: blocks meeting any group box (the marker morphology and labelling run there).
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["BLOCK", "fg_blocks", "fg_groups", "box_blocks", "block_runs"]

#: Side of the square blocks the activity maps are kept in (pixels).
BLOCK = 16


@njit(nogil=True, cache=True)
def fg_blocks(members: np.ndarray, h: int, w: int, block: int) -> np.ndarray:
    """uint8 [ceil(h/block), ceil(w/block)]: 1 where the block holds a kept foreground pixel."""
    nbr = (h + block - 1) // block
    nbc = (w + block - 1) // block
    active = np.zeros((nbr, nbc), np.uint8)
    for k in range(members.shape[0]):
        p = members[k]
        r = p // w
        active[r // block, (p - r * w) // block] = 1
    return active


@njit(nogil=True, cache=True)
def _find(parent: np.ndarray, a: int) -> int:
    while parent[a] != a:
        parent[a] = parent[parent[a]]
        a = parent[a]
    return a


@njit(nogil=True, cache=True)
def fg_groups(labels: np.ndarray, members: np.ndarray, start: np.ndarray):
    """8-connected groups of the 4-connected components: (group int32[n_labels+1] (0 for removed labels),
    boxes int64[n_groups, 4] = (r0, c0, r1, c1) exclusive ends)."""
    h, w = labels.shape
    n_lab = start.shape[0] - 2
    parent = np.arange(n_lab + 1)
    for cp in range(1, n_lab + 1):
        for k in range(start[cp], start[cp + 1]):
            p = members[k]
            r = p // w
            c = p - r * w
            if r + 1 < h:
                if c > 0:
                    q = labels[r + 1, c - 1]
                    if q > 0 and q != cp:
                        a = _find(parent, cp)
                        b = _find(parent, q)
                        if a != b:
                            parent[max(a, b)] = min(a, b)
                if c + 1 < w:
                    q = labels[r + 1, c + 1]
                    if q > 0 and q != cp:
                        a = _find(parent, cp)
                        b = _find(parent, q)
                        if a != b:
                            parent[max(a, b)] = min(a, b)
    group = np.zeros(n_lab + 1, np.int32)
    n_groups = 0
    for cp in range(1, n_lab + 1):
        if start[cp + 1] == start[cp]:
            continue
        root = _find(parent, cp)
        if group[root] == 0:
            n_groups += 1
            group[root] = n_groups
        group[cp] = group[root]
    boxes = np.empty((n_groups, 4), np.int64)
    boxes[:, 0] = h
    boxes[:, 1] = w
    boxes[:, 2] = 0
    boxes[:, 3] = 0
    for cp in range(1, n_lab + 1):
        g = group[cp] - 1
        if g < 0:
            continue
        for k in range(start[cp], start[cp + 1]):
            p = members[k]
            r = p // w
            c = p - r * w
            boxes[g, 0] = min(boxes[g, 0], r)
            boxes[g, 1] = min(boxes[g, 1], c)
            boxes[g, 2] = max(boxes[g, 2], r + 1)
            boxes[g, 3] = max(boxes[g, 3], c + 1)
    return group, boxes


@njit(nogil=True, cache=True)
def box_blocks(boxes: np.ndarray, h: int, w: int, block: int, grow: int) -> np.ndarray:
    """uint8 block map: 1 where a block meets a box grown by `grow` pixels (clipped to the tile)."""
    nbr = (h + block - 1) // block
    nbc = (w + block - 1) // block
    active = np.zeros((nbr, nbc), np.uint8)
    for g in range(boxes.shape[0]):
        r0 = max(boxes[g, 0] - grow, 0) // block
        c0 = max(boxes[g, 1] - grow, 0) // block
        r1 = (min(boxes[g, 2] + grow, h) - 1) // block
        c1 = (min(boxes[g, 3] + grow, w) - 1) // block
        for br in range(r0, r1 + 1):
            for bc in range(c0, c1 + 1):
                active[br, bc] = 1
    return active


@njit(nogil=True, cache=True)
def block_runs(active: np.ndarray) -> np.ndarray:
    """int64 [n, 3] = (block row, first block col, end block col) of each maximal run of active blocks."""
    nbr, nbc = active.shape
    n = 0
    for br in range(nbr):
        prev = 0
        for bc in range(nbc):
            if active[br, bc] != 0 and prev == 0:
                n += 1
            prev = active[br, bc]
    runs = np.empty((n, 3), np.int64)
    n = 0
    for br in range(nbr):
        bc = 0
        while bc < nbc:
            if active[br, bc] == 0:
                bc += 1
                continue
            e = bc
            while e < nbc and active[br, e] != 0:
                e += 1
            runs[n, 0] = br
            runs[n, 1] = bc
            runs[n, 2] = e
            n += 1
            bc = e
    return runs
