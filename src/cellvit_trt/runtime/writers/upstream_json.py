"""Upstream-compatible `cells.json` and `cell_detection.json` (cellvit 1.0.9 layout, reference §10).

    {"wsi_metadata": {...}, "type_map": {"1": "Neoplastic", ...}, "cells": [
        {"bbox": [[rmin, cmin], [rmax, cmax]], "centroid": [x, y], "contour": [[x, y], ...], "type_prob": p,
         "type": t, "patch_coordinates": [row, col], "cell_status": s, "offset_global": [y0, x0],
         "edge_position": bool,
         "edge_information": {"position": [t, r, d, l], "edge_patches": [[r, c], ...]}},
        ...]}
`cell_detection.json` has the same wrapper with `bbox`, `centroid`, `type` per cell. Coordinates are level-0
px as upstream's (centroid rounded with rint, bbox and contour scaled), `offset_global` is the tile origin in
target-mpp px (row, col order), `edge_information` only for border-touching cells. We add `cell_id`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cellvit_trt.runtime.cells import CellBatch, edge_patches
from cellvit_trt.runtime.writers.base import ClassTable, StreamFile


def _nums(a: np.ndarray) -> list:
    """Integer-valued arrays stay integers in the JSON (upstream's coordinates are integers at ds = 1)."""
    a = np.asarray(a, np.float64)
    return a.astype(np.int64).tolist() if np.all(np.mod(a, 1) == 0) else np.round(a, 3).tolist()


def cell_record(batch: CellBatch, i: int, grid) -> dict:
    """Cell `i` of `batch` as one entry of cells.json (also what `cellvit-trt serve` streams)."""
    row, col = int(batch.tile[i, 0]), int(batch.tile[i, 1])
    y0, x0 = grid.origin(row, col)
    cell = {
        "bbox": _nums(batch.bbox[i].reshape(2, 2)),
        "centroid": _nums(np.rint(batch.centroid[i])),
        "contour": _nums(batch.contours[i]),
        "type_prob": float(batch.type_prob[i]),
        "type": int(batch.type[i]),
        "patch_coordinates": [row, col],
        "cell_status": int(batch.cell_status[i]),
        "offset_global": [y0, x0],
        "edge_position": bool(batch.edge[i].any()),
        "cell_id": int(batch.id[i]),
    }
    if cell["edge_position"]:
        sides = [int(v) for v in batch.edge[i]]
        cell["edge_information"] = {"position": sides, "edge_patches": edge_patches(sides, row, col)}
    return cell


class UpstreamJSONWriter:
    def __init__(
        self,
        cells_path: str | Path,
        detection_path: str | Path,
        classes: ClassTable,
        wsi_metadata: dict,
        grid,
    ) -> None:
        self.grid = grid
        head = json.dumps({"wsi_metadata": wsi_metadata, "type_map": classes.type_map()})[:-1]
        self._files = []
        try:
            for path in (cells_path, detection_path):
                f = StreamFile(path, "w", encoding="utf-8")
                self._files.append(f)
                f.fh.write(head + ', "cells": [\n')
        except BaseException:
            self.abort()
            raise
        self._first = True

    def write(self, batch: CellBatch) -> None:
        full, det = [], []
        for i in range(len(batch)):
            cell = cell_record(batch, i, self.grid)
            sep = "" if self._first else ",\n"
            self._first = False
            full.append(sep + json.dumps(cell, separators=(",", ":")))
            det.append(
                sep
                + json.dumps(
                    {"bbox": cell["bbox"], "centroid": cell["centroid"], "type": cell["type"]},
                    separators=(",", ":"),
                )
            )
        self._files[0].fh.write("".join(full))
        self._files[1].fh.write("".join(det))

    def close(self, **_: object) -> None:
        for f in self._files:
            f.fh.write("\n]}\n")
        for f in self._files:
            f.close()

    def abort(self) -> None:
        for f in self._files:
            f.abort()
