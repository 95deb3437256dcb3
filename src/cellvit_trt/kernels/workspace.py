"""Per-thread tile-sized buffers of the region path, kept between tiles.

The region path writes its intermediate maps (foreground components, raw / filled / opened markers, marker
labels, the cover) only near the foreground. Fresh tile-sized arrays would cost a page fault per 4 KiB on
every tile (several ms of system time per 1024 px tile on a VM) and a zero fill; kept buffers cost neither.
Invariant between tiles: `comp` and `markers` are all zero (each tile clears the runs it wrote); the uint8
maps are overwritten or zeroed whole (a 1 MB memset). A tile that raised half-way leaves `dirty` set, and
the next tile zeroes everything first. Buffers go with their thread.
"""

from __future__ import annotations

import threading

import numpy as np

__all__ = ["Workspace", "workspace"]


class Workspace:
    """Buffers for one tile shape: int32 `comp`, `markers`; uint8 `marker`, `filled`, `opened`, `cover`;
    int64 `members`."""

    def __init__(self, h: int, w: int) -> None:
        self.shape = (h, w)
        self.comp = np.zeros((h, w), np.int32)
        self.markers = np.zeros((h, w), np.int32)
        self.marker = np.zeros((h, w), np.uint8)
        self.filled = np.zeros((h, w), np.uint8)
        self.opened = np.zeros((h, w), np.uint8)
        self.cover = np.zeros((h, w), np.uint8)
        self.members = np.empty(h * w, np.int64)  # pixels of the foreground components (any contents)
        self.dirty = False

    def begin(self) -> None:
        """Start a tile: restore the all-zero invariant if the previous tile did not finish."""
        if self.dirty:
            self.comp[:] = 0
            self.markers[:] = 0
        self.dirty = True


_LOCAL = threading.local()


def workspace(h: int, w: int) -> Workspace:
    """This thread's workspace for [h, w] tiles (the previous shape's is dropped)."""
    ws = getattr(_LOCAL, "ws", None)
    if ws is None or ws.shape != (h, w):
        ws = Workspace(h, w)
        _LOCAL.ws = ws
    return ws
