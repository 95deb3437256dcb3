"""Cross-tile merge and writers: cellvit_trt.runtime.merge vs upstream OverlapCellCleaner on the same cells.

    .venv/bin/python benchmarks/bench_merge.py [--rows 4] [--cols 6]

Synthetic cells (jittered disks on a lattice, seen by every 1024 tile that covers them, cut at tile borders)
on a rows x cols grid. Prints, from one run: upstream 1.0.9 OverlapCellCleaner.clean_detected_cells (batch,
pandas) and ours (StreamingMerge, fed tile by tile) in process CPU seconds and ms per tile, their ratio, the
agreement of the kept sets, the peak number of pending cells, and the writers' cost per cell.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import tempfile
import time
import types
from types import SimpleNamespace

import cv2
import numpy as np
from scipy import ndimage

from cellvit_trt.runtime.cells import CellBatch
from cellvit_trt.runtime.merge import StreamingMerge
from cellvit_trt.runtime.sources.base import SourceInfo
from cellvit_trt.runtime.tiling import TileGrid
from cellvit_trt.runtime.writers import open_writers


def tile_table(disks: np.ndarray, grid: TileGrid, row: int, col: int, rng) -> SimpleNamespace:
    t = grid.tile_size
    y0, x0 = grid.origin(row, col)
    inst = np.zeros((t, t), np.int32)
    k = 0
    for y, x, r in disks:
        if -r <= y - y0 < t + r and -r <= x - x0 < t + r:
            k += 1
            dy, dx, dr = rng.uniform(-1, 1, 3)
            cv2.circle(
                inst, (int(round(x - x0 + dx)), int(round(y - y0 + dy))), max(2, int(round(r + dr))), k, -1
            )
    bbox, cent, area, contours = [], [], [], []
    for i, sl in enumerate(ndimage.find_objects(inst), start=1):
        if sl is None:
            continue
        r0, r1, c0, c1 = sl[0].start, sl[0].stop, sl[1].start, sl[1].stop
        crop = (inst[r0:r1, c0:c1] == i).astype(np.uint8)
        m = cv2.moments(crop)
        cnt = cv2.findContours(crop, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0][0].reshape(-1, 2)
        if len(cnt) < 3 or m["m00"] == 0:
            continue
        bbox.append((r0, c0, r1, c1))
        cent.append((m["m10"] / m["m00"] + c0, m["m01"] / m["m00"] + r0))
        area.append(int(crop.sum()))
        contours.append(cnt + (c0, r0))
    n = len(bbox)
    return SimpleNamespace(
        bbox=np.array(bbox, np.int32).reshape(-1, 4),
        centroid=np.array(cent).reshape(-1, 2),
        area=np.array(area, np.int32),
        type=rng.integers(1, 6, n),
        type_prob=np.ones(n, np.float32),
        contours=contours,
    )


def upstream_dicts(batch: CellBatch, row: int, col: int, grid: TileGrid, pp) -> list[dict]:
    y0, x0 = grid.origin(row, col)
    out = []
    for i in range(len(batch)):
        local = (batch.bbox_region[i] - (y0, x0, y0, x0)).astype(int).reshape(2, 2)
        d = {
            "bbox": batch.bbox[i].reshape(2, 2).tolist(),
            "centroid": batch.centroid[i].tolist(),
            "contour": batch.contours[i].tolist(),
            "type_prob": 1.0,
            "type": int(batch.type[i]),
            "patch_coordinates": [row, col],
            "cell_status": pp.get_cell_position_marging(local, 1024, 64),
            "offset_global": [y0, x0],
            "edge_position": False,
        }
        if local.max() == 1024 or local.min() == 0:
            pos = pp.get_cell_position(local, 1024)
            d["edge_position"] = True
            d["edge_information"] = {"position": pos, "edge_patches": pp.get_edge_patch(pos, row, col)}
        out.append(d)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=4)
    ap.add_argument("--cols", type=int, default=6)
    args = ap.parse_args()
    if "ray" not in sys.modules:
        sys.modules["ray"] = types.ModuleType("ray")
    pp = importlib.import_module("cellvit.inference.postprocessing_numpy")
    ocl = importlib.import_module("cellvit.inference.overlap_cell_cleaner")

    grid = TileGrid(args.rows * 960 - 100, args.cols * 960 - 50)
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[14 : grid.height : 29, 14 : grid.width : 29]
    n = ys.size
    disks = np.stack(
        [ys.ravel() + rng.uniform(-4, 4, n), xs.ravel() + rng.uniform(-4, 4, n), rng.uniform(4, 8, n)], 1
    )
    disks = disks[rng.random(n) < 0.7]
    info = SourceInfo(name="bench", height=grid.height, width=grid.width, mpp=0.25)
    batches = {
        (r, c): CellBatch.from_tile(tile_table(disks, grid, r, c, rng), r, c, grid, info)
        for r, c in grid.tiles()
    }
    cell_list, keys = [], []
    for (r, c), b in batches.items():
        cell_list += upstream_dicts(b, r, c, grid, pp)
        keys += [(r, c, *map(int, x)) for x in b.bbox_region]
    print(f"grid {grid.rows}x{grid.cols}: {len(cell_list)} tile cells")

    t0 = time.process_time()
    kept = ocl.OverlapCellCleaner(cell_list, logging.getLogger("oracle")).clean_detected_cells()
    t_up = time.process_time() - t0
    theirs = {keys[i] for i in kept.index}

    out: list[CellBatch] = []
    t0 = time.process_time()
    merge = StreamingMerge(grid, planned=list(grid.tiles()), emit=out.append)
    for (r, c), b in batches.items():
        merge.add(r, c, b)
    merge.finish()
    t_ours = time.process_time() - t0
    cells = CellBatch.concat(out)
    ours = {(int(t[0]), int(t[1]), *map(int, b)) for t, b in zip(cells.tile, cells.bbox_region, strict=True)}
    tiles = len(grid)
    print(
        f"upstream OverlapCellCleaner: {t_up:.2f} s CPU ({1000 * t_up / tiles:.1f} ms/tile), "
        f"kept {len(theirs)}"
    )
    print(
        f"ours StreamingMerge:         {t_ours:.2f} s CPU ({1000 * t_ours / tiles:.1f} ms/tile), "
        f"kept {len(ours)}, "
        f"max pending {merge.max_pending}"
    )
    print(
        f"ratio upstream/ours: {t_up / t_ours:.1f}x; agreement (Jaccard of kept sets) "
        f"{len(ours & theirs) / len(ours | theirs):.4f}"
    )

    cells.embedding = rng.normal(size=(len(cells), 384)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("geojson", "cells", "table", "embeddings"):
            w = open_writers(tmp, [name], info=info, grid=grid)
            t0 = time.process_time()
            w.write(cells)
            w.close()
            print(f"writer {name:10s}: {1e6 * (time.process_time() - t0) / len(cells):6.1f} us/cell CPU")


if __name__ == "__main__":
    main()
