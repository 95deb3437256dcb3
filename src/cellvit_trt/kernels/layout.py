"""Where the foreground is: 16x64 blocks that hold foreground, 8-connected foreground groups and their boxes.

The region-restricted post-processor (docs/kernels.md, "Regions") evaluates each per-pixel step only where
its result can reach the foreground. This module derives the geometry from the kept foreground pixels
(`label4_components`):

- `fg_blocks`: blocks holding at least one foreground pixel (the Sobel, the energy and the relief are exact
  there, and needed nowhere else);
- `fg_groups`: the 8-connected groups of 4-connected foreground components (components that touch only
  diagonally join one group) and each group's bounding box. A hole of the marker map is enclosed by an
  8-connected ring of marker pixels, markers lie inside the foreground, so every hole lies inside the box
  of one group: hole filling runs inside those boxes only.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["BLOCK_H", "BLOCK_W", "fg_blocks", "fg_groups"]

#: Height and width of the blocks the activity maps are kept in (pixels): short in y (the column reach
#: of the filters is added above and below), wide in x (long rows vectorise; short ones cost loop overhead).
BLOCK_H = 16
BLOCK_W = 64


@njit(nogil=True, cache=True)
def fg_blocks(members: np.ndarray, h: int, w: int, bh: int, bw: int) -> np.ndarray:
    """uint8 [ceil(h/bh), ceil(w/bw)]: 1 where the block holds a kept foreground pixel."""
    nbr = (h + bh - 1) // bh
    nbc = (w + bw - 1) // bw
    active = np.zeros((nbr, nbc), np.uint8)
    for k in range(members.shape[0]):
        p = members[k]
        r = p // w
        active[r // bh, (p - r * w) // bw] = 1
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
