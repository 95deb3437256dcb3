"""End to end: a region processed as overlapping tiles + streaming merge == the same region as one large tile.

Maps come from a synthetic instance map (HoVer targets, cellvit_trt.synthetic.targets), run through the real
kernels (cellvit_trt.kernels.PostProcessor) once on the whole region and once per 1024 tile cut from it.
"""

from __future__ import annotations

import cv2
import numpy as np

from cellvit_trt.kernels import PostProcessor
from cellvit_trt.metrics.pq import get_fast_pq
from cellvit_trt.runtime.cells import CellBatch
from cellvit_trt.runtime.merge import StreamingMerge
from cellvit_trt.runtime.sources.base import SourceInfo
from cellvit_trt.runtime.tiling import TileGrid
from cellvit_trt.synthetic.targets import make_targets


def _instances(h: int, w: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Ellipses on a jittered lattice, random classes 1..5."""
    rng = np.random.default_rng(seed)
    inst = np.zeros((h, w), np.int32)
    k = 0
    for y in range(14, h, 29):  # 29 does not divide the 960 stride: borders cut cells at every phase
        for x in range(14, w, 29):
            if rng.random() < 0.75:
                k += 1
                axes = (int(rng.integers(5, 10)), int(rng.integers(5, 10)))
                centre = (int(x + rng.integers(-3, 4)), int(y + rng.integers(-3, 4)))
                cv2.ellipse(inst, centre, axes, float(rng.uniform(0, 180)), 0, 360, k, -1)
    types = np.concatenate([[0], rng.integers(1, 6, k)])
    return inst, types


def _crop(a: np.ndarray, y0: int, x0: int, t: int) -> np.ndarray:
    """a[..., y0:y0+t, x0:x0+t] with zeros outside (no nucleus, zero HV)."""
    out = np.zeros(a.shape[:-2] + (t, t), a.dtype)
    ys, xs = max(0, y0), max(0, x0)
    ye, xe = min(a.shape[-2], y0 + t), min(a.shape[-1], x0 + t)
    out[..., ys - y0 : ye - y0, xs - x0 : xe - x0] = a[..., ys:ye, xs:xe]
    return out


def _raster(contours: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    lab = np.zeros(shape, np.int32)
    for i, ring in enumerate(contours, start=1):
        cv2.fillPoly(lab, [np.round(ring).astype(np.int32).reshape(-1, 1, 2)], i)
    return lab


def test_tiles_plus_merge_equal_one_large_tile():
    grid = TileGrid(2 * 960 - 100, 3 * 960 - 150)
    inst, types = _instances(grid.height, grid.width, seed=11)
    t = make_targets(inst, types)
    pp = PostProcessor()
    whole = pp.process_tile(t.binary, t.hv, t.type_map).cells

    info = SourceInfo(name="region", height=grid.height, width=grid.width, mpp=0.25)
    out: list[CellBatch] = []
    merge = StreamingMerge(grid, planned=list(grid.tiles()), emit=out.append)
    for row, col in grid.tiles():
        y0, x0 = grid.origin(row, col)
        tile = pp.process_tile(
            _crop(t.binary, y0, x0, 1024), _crop(t.hv, y0, x0, 1024), _crop(t.type_map, y0, x0, 1024)
        )
        merge.add(row, col, CellBatch.from_tile(tile.cells, row, col, grid, info))
    merge.finish()
    merged = CellBatch.concat(out)

    ref = _raster([np.asarray(c, np.float64) for c in whole.contours], inst.shape)
    got = _raster(merged.contours, inst.shape)
    dq, sq, pq = get_fast_pq(ref, got)
    print(f"{len(whole.id)} cells as one tile, {len(merged)} after tiles + merge: PQ {pq:.4f} (DQ {dq:.4f})")
    assert pq >= 0.99
    assert abs(len(merged) - len(whole.id)) <= 0.005 * len(whole.id)
    # no duplicates: no two merged cells with centroids within 12 px (the truth never has such pairs)
    c = merged.centroid
    order = np.argsort(c[:, 0])
    close = 0
    for a in range(len(order)):
        for b in range(a + 1, len(order)):
            i, j = order[a], order[b]
            if c[j, 0] - c[i, 0] >= 12:
                break
            close += np.hypot(*(c[i] - c[j])) < 12
    assert close == 0
    # the types survive the trip
    assert set(np.unique(merged.type)) <= {1, 2, 3, 4, 5}
