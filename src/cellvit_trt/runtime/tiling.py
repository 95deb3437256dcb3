"""Tiling grid compatible with upstream CellViT (PathoPatcher DeepZoom tiling).

Interface:
    grid = TileGrid(height, width)                    # region size in target-mpp px; tile 1024, overlap 32
    grid.rows, grid.cols, grid.stride                 # stride = tile_size - 2 * overlap (960)
    grid.origin(row, col) -> (y0, x0)                 # top-left of the tile in region pixels, may be negative
    grid.tiles() -> iterator of (row, col)            # row-major order
    grid.tiles_touching(y0, x0, y1, x1) -> list       # tiles whose footprint intersects a box
    grid.margin                                       # cell-status margin = total overlap (64 px, upstream)

Tile (row, col) covers rows [row*stride - overlap, row*stride - overlap + tile_size) and the same for columns:
with the defaults, [row*960 - 32, row*960 + 992). Pixels outside the region are white (255), as upstream's
`pad_tile`. Unlike upstream's `pad_tile`, the padding side follows the geometry (a grid one tile high is not
shifted), so a cell's global position is always `local + origin`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import numpy as np

from cellvit_trt.errors import InputError

TILE_SIZE = 1024  # upstream patch_size
TILE_OVERLAP = 32  # per side: floor(1024/2 * 6.25/100) in PathoPatcher
PAD_VALUE = 255  # white, as upstream pad_tile


@dataclasses.dataclass(frozen=True)
class TileGrid:
    height: int
    width: int
    tile_size: int = TILE_SIZE
    overlap: int = TILE_OVERLAP

    def __post_init__(self) -> None:
        if self.height <= 0 or self.width <= 0:
            raise InputError(f"tiling: region must be non-empty, got {self.height}x{self.width} pixels")
        if self.tile_size <= 0 or self.overlap < 0 or 2 * self.overlap >= self.tile_size:
            raise InputError(
                f"tiling: need tile_size > 2 * overlap >= 0, got tile_size={self.tile_size}, "
                f"overlap={self.overlap}"
            )

    @property
    def stride(self) -> int:
        return self.tile_size - 2 * self.overlap

    @property
    def margin(self) -> int:
        """Width of the band shared by two neighbouring tiles; upstream's cell_status margin (64 px)."""
        return 2 * self.overlap

    @property
    def rows(self) -> int:
        return math.ceil(self.height / self.stride)

    @property
    def cols(self) -> int:
        return math.ceil(self.width / self.stride)

    def __len__(self) -> int:
        return self.rows * self.cols

    def origin(self, row: int, col: int) -> tuple[int, int]:
        """(y0, x0) of tile pixel [0, 0] in region pixels."""
        return row * self.stride - self.overlap, col * self.stride - self.overlap

    def contains(self, row: int, col: int) -> bool:
        return 0 <= row < self.rows and 0 <= col < self.cols

    def tiles(self) -> Iterator[tuple[int, int]]:
        for row in range(self.rows):
            for col in range(self.cols):
                yield row, col

    def _span(self, lo: float, hi: float, n: int) -> range:
        # tile k covers [k*s - o, k*s - o + T): intersects [lo, hi) iff k*s - o < hi and k*s - o + T > lo
        s, o, t = self.stride, self.overlap, self.tile_size
        first = max(0, math.floor((lo + o - t) / s) + 1)
        last = min(n - 1, math.ceil((hi + o) / s) - 1)
        return range(first, last + 1)

    def tiles_touching(self, y0: float, x0: float, y1: float, x1: float) -> list[tuple[int, int]]:
        """Tiles whose footprint intersects the half-open box [y0, y1) x [x0, x1) (region pixels)."""
        return [(r, c) for r in self._span(y0, y1, self.rows) for c in self._span(x0, x1, self.cols)]


def cut_tile(region: np.ndarray, grid: TileGrid, row: int, col: int) -> np.ndarray:
    """Cut tile (row, col) out of an in-memory region uint8[H, W, 3], padding with white."""
    y0, x0 = grid.origin(row, col)
    return crop_padded(region, y0, x0, grid.tile_size, grid.tile_size)


def crop_padded(region: np.ndarray, y0: int, x0: int, h: int, w: int) -> np.ndarray:
    """region[y0:y0+h, x0:x0+w] with white where the window leaves the array."""
    out = np.full((h, w, 3), PAD_VALUE, dtype=np.uint8)
    ys, xs = max(0, y0), max(0, x0)
    ye, xe = min(region.shape[0], y0 + h), min(region.shape[1], x0 + w)
    if ye > ys and xe > xs:
        out[ys - y0 : ye - y0, xs - x0 : xe - x0] = region[ys:ye, xs:xe]
    return out


def stitch_centres(tiles: dict[tuple[int, int], np.ndarray], grid: TileGrid) -> np.ndarray:
    """Rebuild the region from the central stride x stride part of every tile (inverse of tiling)."""
    out = np.empty((grid.rows * grid.stride, grid.cols * grid.stride, 3), dtype=np.uint8)
    o, s = grid.overlap, grid.stride
    for (row, col), tile in tiles.items():
        out[row * s : (row + 1) * s, col * s : (col + 1) * s] = tile[o : o + s, o : o + s]
    return out[: grid.height, : grid.width]
