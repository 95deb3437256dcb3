"""Streaming cross-tile merge: every cell once, none lost, memory bounded by about one row of tiles.

    merge = StreamingMerge(grid, planned=plan.tiles, emit=writer.write)   # planned=None: every tile may come
    merge.add(row, col, batch)       # the CellBatch of one processed tile (cells.py), in any tile order
    merge.skip(row, col)             # a planned tile that will not come (tissue check failed, push API)
    merge.finish()                   # resolve everything left; afterwards merge.emitted == number of cells
    merge.pending, merge.max_pending # cells held back now / at most

Rules (upstream OverlapCellCleaner.clean_detected_cells, reference §9, made incremental):
1. mid cells (cell_status 0: bbox at least `grid.margin` = 64 px from every tile border) are final at once; no
   other tile can see them.
2. margin cells that do not touch the tile border are candidates.
3. a border-touching cell is a candidate only if the first tile of upstream's get_edge_patch (the orthogonal
   neighbour) does not exist; positions get_edge_patch does not list (e.g. top and bottom) are dropped,
   as upstream. "Exists" (`existing="grid"`, default) means: inside the grid and processed. Upstream
   (`existing="upstream"`) means: contributed at least one margin cell, so an edge cell is also kept when the
   neighbour was processed but found no margin cell there (needs the neighbour's cells, which we wait for).
4. candidates that overlap (intersection > 1 % of either polygon) are resolved exactly as upstream: in
   row-major tile order (a file run's arrival order; tiles arriving in any other order, e.g. a scanner's,
   give the same cells), a query cell is replaced by the largest of its later unvisited overlapping cells;
   repeated (at most 20 passes) until no overlaps remain. Ties in area go to the earliest cell (upstream:
   STRtree query order).

Streaming: a candidate is *ready* when every tile whose footprint meets its bbox is resolved (processed,
skipped or outside the plan). Overlap clusters (connected components of the overlap graph, kept
incrementally with a spatial hash) are resolved when all their cells are ready; no later tile can add a cell
that overlaps them, so the result equals the batch algorithm on the whole slide. Emitted cells get
consecutive ids (0, 1, ...).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon

from cellvit_trt.runtime.cells import CellBatch, edge_patches
from cellvit_trt.runtime.tiling import TileGrid

MIN_OVERLAP = 0.01  # upstream: intersection / area > 0.01 of either cell
MAX_PASSES = 20  # upstream iteration cap
HASH_BIN = 64  # region px per spatial-hash bin (about two nuclei at x40)


def _polygon(contour: np.ndarray) -> Polygon:
    """Upstream's polygon: Polygon(contour), fixed with buffer(0) keeping the largest part when invalid."""
    poly = Polygon(contour)
    if not poly.is_valid:
        fixed = poly.buffer(0)
        if isinstance(fixed, MultiPolygon):
            fixed = max(fixed.geoms, key=lambda p: p.area)
        poly = Polygon(fixed) if not fixed.is_empty else poly
    return poly


def _polygons(contours: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """`_polygon` for many contours at once (one GEOS call per step); returns (polygons, areas)."""
    if not contours:
        return np.empty(0, dtype=object), np.empty(0)
    closed = [np.concatenate([c, c[:1]]) for c in contours]
    lengths = np.array([len(c) for c in closed])
    ring_offsets = np.concatenate([[0], np.cumsum(lengths)])
    geom_offsets = np.arange(len(closed) + 1)
    polys = shapely.from_ragged_array(
        shapely.GeometryType.POLYGON, np.concatenate(closed).astype(np.float64), (ring_offsets, geom_offsets)
    )
    for i in np.flatnonzero(~shapely.is_valid(polys)):
        polys[i] = _polygon(contours[i])
    return polys, shapely.area(polys)


def _edge_patch(sides: np.ndarray, row: int, col: int) -> tuple[int, int] | None:
    """First entry of upstream get_edge_patch (the orthogonal neighbour); None where upstream has none."""
    patches = edge_patches(sides, row, col)
    return None if patches is None else (patches[0][0], patches[0][1])


class _Cell:
    __slots__ = (
        "order",
        "batch",
        "idx",
        "bbox",
        "poly",
        "area",
        "waiting",
        "neighbour",
        "candidate",
        "adj",
        "hashed",
    )

    def __init__(self, order: int, batch: CellBatch, idx: int) -> None:
        self.order, self.batch, self.idx = order, batch, idx
        self.bbox = batch.bbox_region[idx]
        self.poly: Polygon | None = None
        self.area = 0.0
        self.waiting = 0  # unresolved tiles that meet the bbox
        self.neighbour: tuple[int, int] | None = None  # edge cells: the tile that decides them
        self.candidate = False
        self.hashed = False
        self.adj: set[_Cell] = set()


class StreamingMerge:
    def __init__(
        self,
        grid: TileGrid,
        planned: Iterable[tuple[int, int]] | None = None,
        emit: Callable[[CellBatch], None] | None = None,
        existing: str = "grid",
        min_overlap: float = MIN_OVERLAP,
    ) -> None:
        if existing not in ("grid", "upstream"):
            raise ValueError(f"existing: expected 'grid' or 'upstream', got {existing!r}")
        self.grid, self.existing, self.min_overlap = grid, existing, min_overlap
        self._emit = emit
        self._resolved = np.zeros((grid.rows, grid.cols), bool)
        self._processed = np.zeros((grid.rows, grid.cols), bool)
        self._has_margin = np.zeros((grid.rows, grid.cols), bool)
        if planned is not None:
            self._resolved[:] = True
            for r, c in planned:
                self._resolved[r, c] = False
        self._waiting_on: dict[tuple[int, int], list[_Cell]] = {}
        self._undecided: dict[tuple[int, int], list[_Cell]] = {}  # edge cells waiting for their neighbour
        self._hash: dict[tuple[int, int], set[_Cell]] = {}
        self._ready: set[_Cell] = set()
        self.pending = 0
        self.max_pending = 0
        self.emitted = 0
        self.dropped = 0
        self._out: list[CellBatch] = []  # final mid cells of the current event
        self._out_cells: list[_Cell] = []  # final margin cells of the current event

    # -- public -------------------------------------------------------------------------------------------
    def add(self, row: int, col: int, batch: CellBatch) -> None:
        self._check_open(row, col)
        self._processed[row, col] = True
        status = batch.cell_status
        self._has_margin[row, col] = bool(np.any(status != 0))
        mid = np.flatnonzero(status == 0)
        if len(mid):
            self._out.append(batch.take(mid))
        edge = batch.edge_position
        margin = np.flatnonzero(status != 0)
        polys, areas = _polygons([batch.contours_region[i] for i in margin])
        spans = self._spans(batch.bbox_region[margin])
        # A cell's order is its tile's row-major position, then its index: overlap clusters resolve in the
        # order a file run sees them, whatever order the tiles arrive in (a scanner's), so the kept cells are
        # the same.
        base = (row * self.grid.cols + col) << 32
        for k, i in enumerate(margin):
            cell = _Cell(base + int(i), batch, int(i))
            cell.poly, cell.area = polys[k], float(areas[k])
            self._track(cell, spans[k])
            if not edge[i]:
                self._make_candidate(cell)
                continue
            cell.neighbour = _edge_patch(batch.edge[i], row, col)
            if cell.neighbour is None:
                self._drop(cell)
            elif self.grid.contains(*cell.neighbour) and not self._resolved[cell.neighbour]:
                # undecided: it joins the overlap graph so that clusters it may join wait for it
                self._hash_in(cell)
                self._undecided.setdefault(cell.neighbour, []).append(cell)
            else:
                self._decide(cell)
        self._resolve_tile(row, col)
        self._flush()

    def skip(self, row: int, col: int) -> None:
        self._check_open(row, col)
        self._resolve_tile(row, col)
        self._flush()

    def finish(self) -> None:
        for r, c in zip(*np.nonzero(~self._resolved), strict=True):
            self._resolve_tile(int(r), int(c), flush=False)
        self._settle()
        self._flush()
        if self.pending:
            raise RuntimeError(
                f"merge: {self.pending} cells still pending after finish()"
            )  # a bug, not input

    # -- bookkeeping --------------------------------------------------------------------------------------
    def _check_open(self, row: int, col: int) -> None:
        if not self.grid.contains(row, col):
            raise ValueError(f"merge: tile ({row}, {col}) outside the {self.grid.rows}x{self.grid.cols} grid")
        if self._resolved[row, col]:
            raise ValueError(f"merge: tile ({row}, {col}) was already added, skipped or not planned")

    def _spans(self, bbox: np.ndarray) -> np.ndarray:
        """[r_first, r_last, c_first, c_last] of the tiles meeting each bbox (as TileGrid.tiles_touching)."""
        g = self.grid
        s, o, t = g.stride, g.overlap, g.tile_size
        first = np.floor((bbox[:, :2] + o - t) / s).astype(np.int64) + 1
        last = np.ceil((bbox[:, 2:] + o) / s).astype(np.int64) - 1
        first = np.maximum(first, 0)
        last = np.minimum(last, [g.rows - 1, g.cols - 1])
        return np.stack([first[:, 0], last[:, 0], first[:, 1], last[:, 1]], 1)

    def _track(self, cell: _Cell, span: np.ndarray) -> None:
        self.pending += 1
        self.max_pending = max(self.max_pending, self.pending)
        r_first, r_last, c_first, c_last = span.tolist()
        for r in range(r_first, r_last + 1):
            for c in range(c_first, c_last + 1):
                if not self._resolved[r, c]:
                    cell.waiting += 1
                    self._waiting_on.setdefault((r, c), []).append(cell)

    def _resolve_tile(self, row: int, col: int, flush: bool = True) -> None:
        self._resolved[row, col] = True
        for cell in self._undecided.pop((row, col), []):
            self._decide(cell)
        for cell in self._waiting_on.pop((row, col), []):
            cell.waiting -= 1
            if cell.waiting == 0 and cell.candidate:
                self._ready.add(cell)
        if flush:
            self._settle()

    def _decide(self, cell: _Cell) -> None:
        t = cell.neighbour
        if not self.grid.contains(*t):
            exists = False
        elif self.existing == "grid":
            exists = bool(self._processed[t])
        else:
            exists = bool(self._has_margin[t])
        if exists:
            self._drop(cell)
        else:
            self._make_candidate(cell)

    def _drop(self, cell: _Cell) -> None:
        self.pending -= 1
        self.dropped += 1
        cell.waiting = -1  # never ready
        cell.candidate = False
        if cell.hashed:
            freed = list(cell.adj)
            self._unhash(cell)
            self._ready.update(c for c in freed if c.candidate and c.waiting == 0)

    def _bins(self, bbox: np.ndarray) -> list[tuple[int, int]]:
        r0, c0, r1, c1 = (int(math.floor(v / HASH_BIN)) for v in (bbox[0], bbox[1], bbox[2] - 1, bbox[3] - 1))
        return [(i, j) for i in range(r0, r1 + 1) for j in range(c0, c1 + 1)]

    def _hash_in(self, cell: _Cell) -> None:
        """Link the cell to every overlapping cell already held."""
        cell.hashed = True
        near: dict[_Cell, None] = {}  # bbox-overlapping cells, in a stable order
        r0, c0, r1, c1 = cell.bbox
        for b in self._bins(cell.bbox):
            for other in self._hash.get(b, ()):
                o = other.bbox
                if o[0] < r1 and r0 < o[2] and o[1] < c1 and c0 < o[3]:
                    near[other] = None
            self._hash.setdefault(b, set()).add(cell)
        if not near:
            return
        # identical outlines (one nucleus seen whole by two tiles) overlap by their whole area: no GEOS call
        mine = cell.batch.contours_region[cell.idx]
        same = [o for o in near if np.array_equal(o.batch.contours_region[o.idx], mine)]
        for other in same:
            if self._overlaps(cell.area, other.area, cell.area):
                cell.adj.add(other)
                other.adj.add(cell)
        same_set = set(same)
        rest = [o for o in near if o not in same_set]
        if not rest:
            return
        # cheap predicate next: most bbox neighbours are disjoint cells of the same tile
        shapely.prepare(cell.poly)
        cand = np.array([o.poly for o in rest], dtype=object)
        hit = shapely.intersects(cell.poly, cand)
        if not hit.any():
            return
        others = [o for o, h in zip(rest, hit, strict=True) if h]
        inter = shapely.area(shapely.intersection(cell.poly, cand[hit]))
        for other, area in zip(others, inter, strict=True):
            if self._overlaps(cell.area, other.area, float(area)):
                cell.adj.add(other)
                other.adj.add(cell)

    def _make_candidate(self, cell: _Cell) -> None:
        if not cell.hashed:
            self._hash_in(cell)
        cell.candidate = True
        if cell.waiting == 0:
            self._ready.add(cell)

    def _overlaps(self, area_a: float, area_b: float, inter: float) -> bool:
        # upstream: inter / area > 0.01 for either cell; zero-area (degenerate) polygons never overlap
        # (upstream would divide by zero)
        m = self.min_overlap
        return (area_a > 0 and inter / area_a > m) or (area_b > 0 and inter / area_b > m)

    # -- resolution ---------------------------------------------------------------------------------------
    def _settle(self) -> None:
        """Resolve every overlap cluster whose cells are all ready."""
        while self._ready:
            start = self._ready.pop()
            cluster, ok, stack = {start}, True, [start]
            while stack:
                for other in stack.pop().adj:
                    if other not in cluster:
                        cluster.add(other)
                        stack.append(other)
                        ok = ok and other.candidate and other.waiting == 0
            if not ok:
                continue  # it becomes ready again when its last tile resolves
            self._ready.difference_update(cluster)
            kept = resolve_cluster(sorted(cluster, key=lambda c: c.order), lambda a, b: b in a.adj)
            for cell in cluster:
                self._unhash(cell)
                self.pending -= 1
                if cell not in kept:
                    self.dropped += 1
            self._out_cells.extend(sorted(kept, key=lambda c: c.order))

    def _unhash(self, cell: _Cell) -> None:
        for b in self._bins(cell.bbox):
            s = self._hash.get(b)
            if s is not None:
                s.discard(cell)
                if not s:
                    del self._hash[b]
        for other in cell.adj:
            other.adj.discard(cell)
        cell.adj = set()

    def _flush(self) -> None:
        groups: dict[int, tuple[CellBatch, list[int]]] = {}
        # Clusters settle in set order; emitting in tile order keeps cell ids identical from run to run.
        for cell in sorted(self._out_cells, key=lambda c: c.order):
            groups.setdefault(id(cell.batch), (cell.batch, []))[1].append(cell.idx)
        parts = self._out + [b.take(idx) for b, idx in groups.values()]
        self._out, self._out_cells = [], []
        if not parts:
            return
        batch = CellBatch.concat(parts)
        batch.id = np.arange(self.emitted, self.emitted + len(batch), dtype=np.int64)
        self.emitted += len(batch)
        if self._emit is not None:
            self._emit(batch)


def resolve_cluster(cells: list, overlaps: Callable) -> set:
    """Upstream's _remove_overlap_shapely_2 on one cluster (cells in tile order, each with `.area`)."""
    survivors = cells
    for _ in range(MAX_PASSES):
        visited: set = set()
        merged: list = []
        found = 0
        for q in survivors:
            if q in visited:
                continue
            subs = [o for o in survivors if o is not q and o not in visited and overlaps(q, o)]
            visited.update(subs)
            found += len(subs)
            if subs:
                areas = np.array([o.area for o in subs])
                merged.append(subs[int(np.argmax(areas))])
            else:
                merged.append(q)
            visited.add(q)
        if found == 0:
            break
        keep = set(merged)
        survivors = [c for c in cells if c in keep]
    return set(survivors)
