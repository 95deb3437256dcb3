"""Global cell records: a struct of arrays that flows from the kernels through the merge to the writers.

    batch = CellBatch.from_tile(table, row, col, grid, info, tokens=None)   # kernels' CellTable -> global
    batch.centroid  float64 [N, 2]  (x, y) level-0 slide px (not rounded; upstream's cells.json rounds)
    batch.bbox      float64 [N, 4]  (rmin, cmin, rmax, cmax) level-0 slide px, exclusive max (upstream order)
    batch.contours  list of float64 [K, 2]  (x, y) level-0 slide px, open rings
    batch.area      int32 [N]       pixels at the target mpp (the model's pixels)
    batch.type      int16 [N]       class id (1..C-1; 0 is never present)
    batch.type_prob float32 [N]     fraction of the cell's pixels that voted for `type`
    batch.tile      int32 [N, 2]    (row, col) of the tile that produced the cell
    batch.cell_status int8 [N]      upstream 0 = mid, 1..8 = margin (clockwise from top-left)
    batch.edge      uint8 [N, 4]    touches the tile border (top, right, down, left); edge_position = any
    batch.embedding float32 [N, E] or None   mean token under the cell's bbox (upstream §8)
    batch.id        int64 [N]       global id, set by the merge when the cell is final (-1 before)
    batch.bbox_region float64 [N, 4], batch.contours_region: the same in region (target-mpp) px, for the merge

`table` is duck-typed: any object with the kernels' CellTable fields (bbox int32 [N,4] = (rmin, cmin, rmax+1,
cmax+1) tile px, centroid (x, y), area, type, type_prob, contours list of int32 [K, 2] (x, y)).
"""

from __future__ import annotations

import dataclasses

import numpy as np

TOKEN_SIZE = 16  # ViT patch size: token (i, j) covers tile pixels [16 i, 16 i + 16)


def cell_status(bbox: np.ndarray, tile_size: int, margin: int) -> np.ndarray:
    """Upstream get_cell_position_marging, vectorised; bbox int [N, 4] (rmin, cmin, rmax+1, cmax+1)."""
    r0, c0, r1, c1 = (bbox[:, i] for i in range(4))
    hi = tile_size - margin
    in_margin = (bbox.max(axis=1) > hi) | (bbox.min(axis=1) < margin)
    top, right, bottom, left = r0 < margin, c1 > hi, r1 > hi, c0 < margin
    status = np.select(
        [
            top & left,
            top & right,
            top,
            right & bottom,
            right,
            bottom & left,
            bottom,
            left,
        ],
        [1, 3, 2, 5, 4, 7, 6, 8],
        default=0,
    )
    return np.where(in_margin, status, 0).astype(np.int8)


def edge_sides(bbox: np.ndarray, tile_size: int) -> np.ndarray:
    """Upstream get_cell_position: [top, right, down, left] border contact, uint8 [N, 4]."""
    return np.stack(
        [bbox[:, 0] == 0, bbox[:, 3] == tile_size, bbox[:, 2] == tile_size, bbox[:, 1] == 0], axis=1
    ).astype(np.uint8)


def edge_patches(sides, row: int, col: int) -> list[list[int]] | None:
    """Upstream get_edge_patch: the tiles a border-touching cell may continue into, orthogonal one first;
    None for contacts upstream does not list (e.g. top and bottom)."""
    r, c = row, col
    table = {
        (1, 0, 0, 0): [[r - 1, c]],
        (1, 1, 0, 0): [[r - 1, c], [r - 1, c + 1], [r, c + 1]],
        (0, 1, 0, 0): [[r, c + 1]],
        (0, 1, 1, 0): [[r, c + 1], [r + 1, c + 1], [r + 1, c]],
        (0, 0, 1, 0): [[r + 1, c]],
        (0, 0, 1, 1): [[r + 1, c], [r + 1, c - 1], [r, c - 1]],
        (0, 0, 0, 1): [[r, c - 1]],
        (1, 0, 0, 1): [[r, c - 1], [r - 1, c - 1], [r - 1, c]],
    }
    return table.get(tuple(int(v) for v in sides))


def cell_embeddings(tokens: np.ndarray, bbox: np.ndarray, token_size: int = TOKEN_SIZE) -> np.ndarray:
    """Mean token under each cell's bbox: tokens [E, h, w], bbox tile px -> float32 [N, E] (upstream §8:
    bbox / 16 with the min floored and the max ceiled)."""
    n = len(bbox)
    out = np.empty((n, tokens.shape[0]), np.float32)
    lo = np.floor(bbox[:, :2] / token_size).astype(np.int64)
    hi = np.ceil(bbox[:, 2:] / token_size).astype(np.int64)
    for i in range(n):
        window = tokens[:, lo[i, 0] : hi[i, 0], lo[i, 1] : hi[i, 1]]
        out[i] = window.reshape(tokens.shape[0], -1).astype(np.float32).mean(axis=1)
    return out


@dataclasses.dataclass
class CellBatch:
    centroid: np.ndarray
    bbox: np.ndarray
    contours: list
    area: np.ndarray
    type: np.ndarray
    type_prob: np.ndarray
    tile: np.ndarray
    cell_status: np.ndarray
    edge: np.ndarray
    bbox_region: np.ndarray
    contours_region: list
    embedding: np.ndarray | None = None
    id: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.id is None:
            self.id = np.full(len(self.area), -1, np.int64)

    def __len__(self) -> int:
        return len(self.area)

    @property
    def edge_position(self) -> np.ndarray:
        return self.edge.any(axis=1)

    @classmethod
    def empty(cls, embedding_dim: int | None = None) -> CellBatch:
        z = np.zeros
        return cls(
            z((0, 2)),
            z((0, 4)),
            [],
            z(0, np.int32),
            z(0, np.int16),
            z(0, np.float32),
            z((0, 2), np.int32),
            z(0, np.int8),
            z((0, 4), np.uint8),
            z((0, 4)),
            [],
            None if embedding_dim is None else z((0, embedding_dim), np.float32),
        )

    @classmethod
    def from_tile(cls, table, row: int, col: int, grid, info, tokens: np.ndarray | None = None) -> CellBatch:
        """Tile-local CellTable -> global batch (`grid`: TileGrid, `info`: SourceInfo with scale, offset)."""
        bbox_local = np.asarray(table.bbox, dtype=np.int64).reshape(-1, 4)
        n = len(bbox_local)
        y0, x0 = grid.origin(row, col)
        scale, (ox, oy) = float(info.scale), info.offset
        shift_rc = np.array([y0, x0, y0, x0], np.float64)
        bbox_region = bbox_local + shift_rc
        contours_region = [np.asarray(c, np.float64).reshape(-1, 2) + (x0, y0) for c in table.contours]
        return cls(
            centroid=(np.asarray(table.centroid, np.float64).reshape(-1, 2) + (x0, y0)) * scale + (ox, oy),
            bbox=bbox_region * scale + np.array([oy, ox, oy, ox]),
            contours=[c * scale + (ox, oy) for c in contours_region],
            area=np.asarray(table.area, np.int32),
            type=np.asarray(table.type, np.int16),
            type_prob=np.asarray(table.type_prob, np.float32),
            tile=np.tile(np.array([row, col], np.int32), (n, 1)),
            cell_status=cell_status(bbox_local, grid.tile_size, grid.margin),
            edge=edge_sides(bbox_local, grid.tile_size),
            bbox_region=bbox_region,
            contours_region=contours_region,
            embedding=None if tokens is None else cell_embeddings(tokens, bbox_local),
        )

    def take(self, index: np.ndarray | list[int]) -> CellBatch:
        idx = np.asarray(index, dtype=np.int64)
        return CellBatch(
            self.centroid[idx],
            self.bbox[idx],
            [self.contours[i] for i in idx],
            self.area[idx],
            self.type[idx],
            self.type_prob[idx],
            self.tile[idx],
            self.cell_status[idx],
            self.edge[idx],
            self.bbox_region[idx],
            [self.contours_region[i] for i in idx],
            None if self.embedding is None else self.embedding[idx],
            self.id[idx],
        )

    @staticmethod
    def concat(batches: list[CellBatch]) -> CellBatch:
        batches = [b for b in batches if len(b)] or batches[:1]
        if not batches:
            return CellBatch.empty()
        if len(batches) == 1:
            return batches[0]
        cat = np.concatenate
        emb = [b.embedding for b in batches]
        return CellBatch(
            cat([b.centroid for b in batches]),
            cat([b.bbox for b in batches]),
            [c for b in batches for c in b.contours],
            cat([b.area for b in batches]),
            cat([b.type for b in batches]),
            cat([b.type_prob for b in batches]),
            cat([b.tile for b in batches]),
            cat([b.cell_status for b in batches]),
            cat([b.edge for b in batches]),
            cat([b.bbox_region for b in batches]),
            [c for b in batches for c in b.contours_region],
            None if any(e is None for e in emb) else cat(emb),
            cat([b.id for b in batches]),
        )
