"""The source interface: a region of pixels at the target mpp, read tile by tile.

    with open_source(path, target_mpp=0.25) as src:          # cellvit_trt.runtime.sources.open_source
        src.info.name, src.info.height, src.info.width       # region size in target-mpp pixels
        src.grid                                             # TileGrid (tile 1024, overlap 32 unless told)
        for tile in src.tiles(selection):                    # row-major; selection: iterable of (row, col)
            tile.image                                       # uint8 [S, S, 3] RGB, white outside the region
            tile.row, tile.col, tile.y0, tile.x0             # grid position and region offset of pixel [0, 0]
        src.read_region(y0, x0, h, w)                        # any window, white-padded, bounded memory
        src.thumbnail(max_side) -> (uint8 [h, w, 3], factor) # factor = region px per thumbnail px
        src.info.to_slide(xy)                                # region px (x, y) -> level-0 slide px

Subclasses implement `_read(y0, x0, h, w)` for windows inside the region only. Reader failures become an
`InputError` naming the file and the tile (or window).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator

import cv2
import numpy as np

from cellvit_trt.errors import InputError
from cellvit_trt.runtime.tiling import PAD_VALUE, TileGrid


@dataclasses.dataclass(frozen=True)
class SourceInfo:
    name: str  # file path or label, used in messages and outputs
    height: int  # region size in target-mpp pixels
    width: int
    mpp: float | None  # mpp of the delivered pixels (None: unknown, image assumed at the target)
    scale: float = 1.0  # level-0 slide px per region px
    offset: tuple[float, float] = (0.0, 0.0)  # level-0 (x, y) of region pixel (0, 0): slide bounds
    base_mpp: float | None = None  # level-0 mpp of the file
    level: int = 0  # pyramid level read
    resample: float = 1.0  # level px per region px (1.0: no resampling)
    reader: str = ""  # "openslide", "tiffslide", "opencv", "pillow", "numpy", "push"
    properties: dict = dataclasses.field(default_factory=dict, compare=False)  # a few slide properties

    def to_slide(self, xy: np.ndarray) -> np.ndarray:
        """(x, y) region pixels -> (x, y) level-0 slide pixels (corner convention, as upstream)."""
        return np.asarray(xy, dtype=np.float64) * self.scale + np.asarray(self.offset)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Tile:
    row: int
    col: int
    y0: int  # region pixel of image[0, 0] (negative on the first row/col: white padding)
    x0: int
    image: np.ndarray  # uint8 [S, S, 3] RGB


class Source:
    """Base class: padding, tiling and error wrapping around `_read`."""

    info: SourceInfo
    grid: TileGrid

    def __init__(self, info: SourceInfo, tile_size: int, overlap: int) -> None:
        self.warnings: list[str] = []  # conversions and approximations the run should report
        self.info = info
        self.grid = TileGrid(info.height, info.width, tile_size, overlap)

    # -- to implement -----------------------------------------------------------------------------------
    def _read(self, y0: int, x0: int, h: int, w: int) -> np.ndarray:
        """uint8 [h, w, 3] RGB for a window fully inside the region."""
        raise NotImplementedError

    def close(self) -> None:
        """Release file handles; idempotent."""

    # -- public -------------------------------------------------------------------------------------------
    def read_region(self, y0: int, x0: int, h: int, w: int, what: str | None = None) -> np.ndarray:
        out = np.full((h, w, 3), PAD_VALUE, dtype=np.uint8)
        ys, xs = max(0, y0), max(0, x0)
        ye, xe = min(self.info.height, y0 + h), min(self.info.width, x0 + w)
        if ye <= ys or xe <= xs:
            return out
        try:
            part = self._read(ys, xs, ye - ys, xe - xs)
        except InputError:
            raise
        except Exception as exc:  # any reader failure (OpenSlide, libtiff, codecs, truncated data)
            where = what or f"window y={ys}..{ye} x={xs}..{xe}"
            raise InputError(f"{self.info.name}: cannot read {where} ({type(exc).__name__}: {exc})") from exc
        if part.shape != (ye - ys, xe - xs, 3) or part.dtype != np.uint8:
            raise InputError(
                f"{self.info.name}: reader returned {part.dtype}{list(part.shape)} for "
                f"{what or 'a window'}, expected uint8[{ye - ys}, {xe - xs}, 3]"
            )
        out[ys - y0 : ye - y0, xs - x0 : xe - x0] = part
        return out

    def read_tile(self, row: int, col: int) -> Tile:
        if not self.grid.contains(row, col):
            raise InputError(
                f"{self.info.name}: tile ({row}, {col}) is outside the {self.grid.rows}x{self.grid.cols} grid"
            )
        y0, x0 = self.grid.origin(row, col)
        t = self.grid.tile_size
        image = self.read_region(y0, x0, t, t, what=f"tile (row {row}, col {col}) at region y={y0} x={x0}")
        return Tile(row, col, y0, x0, image)

    def tiles(self, selection: Iterable[tuple[int, int]] | None = None) -> Iterator[Tile]:
        """Tiles in row-major order (or in the order of `selection`)."""
        for row, col in self.grid.tiles() if selection is None else selection:
            yield self.read_tile(row, col)

    def thumbnail(self, max_side: int = 2048) -> tuple[np.ndarray, float]:
        """Whole region downscaled so its longer side is <= max_side; read in strips to bound memory."""
        factor = max(1.0, max(self.info.height, self.info.width) / max_side)
        th, tw = max(1, round(self.info.height / factor)), max(1, round(self.info.width / factor))
        out = np.empty((th, tw, 3), dtype=np.uint8)
        # ~16 Mpx of region per strip (48 MB), whatever the slide size
        step = max(1, int(((1 << 24) // max(1, self.info.width)) / factor))
        y = 0
        while y < th:
            # thumbnail rows [y, y2) come from region rows [y*factor, y2*factor)
            y2 = min(th, y + step)
            r0, r1 = int(round(y * factor)), min(self.info.height, int(round(y2 * factor)))
            part = self.read_region(r0, 0, max(1, r1 - r0), self.info.width, what="thumbnail strip")
            out[y:y2] = cv2.resize(part, (tw, y2 - y), interpolation=cv2.INTER_AREA)
            y = y2
        return out, factor

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        i = self.info
        g = self.grid
        size = f"{i.height}x{i.width} px at {i.mpp} mpp"
        return f"{type(self).__name__}({i.name!r}, {size}, grid {g.rows}x{g.cols})"
