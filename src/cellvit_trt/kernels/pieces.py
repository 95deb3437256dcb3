"""Whether an instance is in several 8-connected pieces (OpenCV then has several outer contours).

Only an instance whose marker's in-mask part may be disconnected can be (`watershed.seeds_from_runs`' cut
flag: every labelled pixel is 4-connected to a seed of its label), and nearly none are; the measure pass
(`cells.py`) settles the flagged ones here, by union-find over their row runs inside their bbox.
"""

from __future__ import annotations

from numba import njit

from cellvit_trt.kernels.morphology import _root

__all__ = ["one_piece"]


@njit(nogil=True, cache=True)
def one_piece(inst, lab, r0, c0, r1, c1, parent, rs, re) -> bool:
    """True if the pixels of `lab` inside its bbox [r0, r1) x [c0, c1) form one 8-connected component:
    their row runs, joined with union-find where runs of consecutive rows overlap or touch diagonally.
    `parent`, `rs`, `re`: scratch with room for one entry per pixel of `lab`."""
    n = 0
    pieces = 0
    prev_lo = 0
    prev_hi = 0
    for r in range(r0, r1):
        row = inst[r]
        cur_lo = n
        c = c0
        while c < c1:
            if row[c] != lab:
                c += 1
                continue
            s = c
            while c < c1 and row[c] == lab:
                c += 1
            rs[n] = s
            re[n] = c
            parent[n] = n
            pieces += 1
            for j in range(prev_lo, prev_hi):  # [rs, re) and [s, c) 8-adjacent: rs <= c and s <= re
                if rs[j] <= c and s <= re[j]:
                    x = _root(parent, j)
                    y = _root(parent, n)
                    if x != y:
                        parent[max(x, y)] = min(x, y)
                        pieces -= 1
            n += 1
        prev_lo = cur_lo
        prev_hi = n
    return pieces == 1
