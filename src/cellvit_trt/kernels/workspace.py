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


#: Bytes between two buffers of a workspace: a page and a cache line.
GAP = 4096 + 64
_MAPS = (
    ("comp", np.int32),
    ("markers", np.int32),
    ("marker", np.uint8),
    ("filled", np.uint8),
    ("opened", np.uint8),
    ("cover", np.uint8),
)


def _arena(h: int, w: int) -> dict[str, np.ndarray]:
    """The tile maps as zeroed views of one allocation, GAP bytes apart. Allocated one by one, where they
    land depends on the allocator's state: in the benchmark's process `marker` lay 16 bytes behind the end
    of `comp`, and the energy fuse (which reads a `comp` row and writes a `marker` row) then took 2.7 ms
    instead of 1.9 on the medium-real tile (AMD EPYC; the same arrays copied elsewhere: 1.9 ms; `marker`
    placed 16 to 4,095 bytes behind `comp`: 2.6-2.7 ms, 4,112 bytes or more: 1.9 ms; interleaved in one
    process). One allocation with gaps makes the layout the same in every process."""
    sizes = [h * w * np.dtype(dt).itemsize for _, dt in _MAPS]
    raw = np.zeros(sum(sizes) + GAP * len(sizes) + 64, np.uint8)
    at = -raw.ctypes.data % 64  # each map on a cache line
    maps = {}
    for (name, dt), size in zip(_MAPS, sizes, strict=True):
        maps[name] = raw[at : at + size].view(dt).reshape(h, w)
        at += size + GAP
    return maps


class Workspace:
    """Buffers for one tile shape: int32 `comp`, `markers`; uint8 `marker`, `filled`, `opened`, `cover`
    (one allocation, `_arena`); int64 `members`."""

    def __init__(self, h: int, w: int) -> None:
        self.shape = (h, w)
        maps = _arena(h, w)
        self.comp = maps["comp"]
        self.markers = maps["markers"]
        self.marker = maps["marker"]
        self.filled = maps["filled"]
        self.opened = maps["opened"]
        self.cover = maps["cover"]
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
