"""Output writers. Every writer streams (cells arrive in chunks), keeps memory bounded and is atomic.

    writers = open_writers(out_dir, outputs, info=src.info, meta=backend.meta, grid=src.grid, source=src)
    writers.write(batch)                  # a CellBatch of final cells (StreamingMerge's emit callback)
    writers.add_tile_tissue(row, col, logits)   # tissue classifier logits of one tile ("tissue" output)
    writers.close(summary)                # finalise every file; `summary` (dict) goes into summary.json
    writers.abort()                       # on error: every temporary file removed, nothing half-written

outputs (names -> files in out_dir):
    geojson     cells.geojson               QuPath detections, one Polygon Feature per cell (geojson.py)
    cells       cells.json, cell_detection.json   upstream 1.0.9 layout (upstream_json.py)
    table       cells.csv, cells.parquet    one row per cell (parquet with the `parquet` extra: pyarrow)
    embeddings  embeddings.npy, embeddings_index.csv   mean token per cell (float16 unless told)
    tissue      tissue_tiles.csv, tissue_tiles.json    tissue class per processed tile
    overlay     overlay.png                 contours over one region window (needs `source`)
    summary     summary.json                counts per class, versions + the caller's summary dict
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from cellvit_trt.errors import InputError
from cellvit_trt.runtime.cells import CellBatch
from cellvit_trt.runtime.writers.base import ClassTable, StreamFile
from cellvit_trt.runtime.writers.summary import write_summary

log = logging.getLogger(__name__)

OUTPUTS = ("geojson", "cells", "table", "embeddings", "tissue", "overlay", "summary")
OUTPUT_FILES = {  # every file each output may write (runtime.outdir tells them from foreign files)
    "geojson": ("cells.geojson",),
    "cells": ("cells.json", "cell_detection.json"),
    "table": ("cells.csv", "cells.parquet"),
    "embeddings": ("embeddings.npy", "embeddings_index.csv"),
    "tissue": ("tissue_tiles.csv", "tissue_tiles.json"),
    "overlay": ("overlay.png",),
    "summary": ("summary.json",),
}
__all__ = [
    "OUTPUTS",
    "OUTPUT_FILES",
    "ClassTable",
    "StreamFile",
    "WriterSet",
    "open_writers",
    "write_geojson",
    "wsi_metadata",
]


def write_geojson(path: str | Path, cells: Any, class_names: Any = None, **kwargs: Any) -> int:
    """QuPath GeoJSON of a tile's CellTable or a run's CellBatch, from Python (see geojson.write_geojson)."""
    from cellvit_trt.runtime.writers.geojson import write_geojson as _write

    return _write(path, cells, class_names, **kwargs)


def wsi_metadata(info, grid) -> dict[str, Any]:
    """Upstream-like `wsi_metadata` block for cells.json."""
    return {
        "orig_n_tiles_cols": grid.cols,
        "orig_n_tiles_rows": grid.rows,
        "downsampling": info.scale,
        "patch_overlap": grid.margin,
        "patch_size": grid.tile_size,
        "base_mpp": info.base_mpp,
        "target_patch_mpp": info.mpp,
        "level": info.level,
        "offset_level0_xy": list(info.offset),
        "source": info.name,
        "reader": info.reader,
    }


class WriterSet:
    def __init__(self, out_dir: Path, classes: ClassTable) -> None:
        self.out_dir, self.classes = out_dir, classes
        self.writers: dict[str, Any] = {}
        self.tissue = None
        self.summary_path: Path | None = None
        self.counts: dict[int, int] = {}
        self.cells = 0

    def write(self, batch: CellBatch) -> None:
        if not len(batch):
            return
        for t, n in zip(*np.unique(batch.type, return_counts=True), strict=True):
            self.counts[int(t)] = self.counts.get(int(t), 0) + int(n)
        self.cells += len(batch)
        for w in self.writers.values():
            w.write(batch)

    def add_tile_tissue(self, row: int, col: int, logits: np.ndarray) -> None:
        if self.tissue is not None:
            self.tissue.add(row, col, logits)

    def close(self, summary: dict[str, Any] | None = None) -> dict[str, Any] | None:
        items = list(self.writers.items()) + ([("tissue", self.tissue)] if self.tissue is not None else [])
        for i, (_, w) in enumerate(items):
            try:
                w.close()
            except BaseException:
                for _, rest in items[i:]:
                    rest.abort()
                raise
        if self.summary_path is not None:
            return write_summary(self.summary_path, summary or {}, self.counts, self.classes)
        return None

    def abort(self) -> None:
        for w in list(self.writers.values()) + ([self.tissue] if self.tissue is not None else []):
            try:
                w.abort()
            except Exception:  # keep aborting the others; the first error is already propagating
                log.warning("abort of %s failed", type(w).__name__, exc_info=True)


def open_writers(
    out_dir: str | Path,
    outputs: Iterable[str],
    info,
    meta: Any = None,
    grid=None,
    source=None,
    overlay_window: tuple[int, int, int, int] | None = None,
    embedding_dtype: str = "float16",
    points: bool = False,
) -> WriterSet:
    outputs = list(outputs)
    unknown = [o for o in outputs if o not in OUTPUTS]
    if unknown:
        raise InputError(f"outputs: unknown {unknown}; expected some of {', '.join(OUTPUTS)}")
    out_dir = Path(out_dir)
    files = {k: [out_dir / name for name in names] for k, names in OUTPUT_FILES.items()}
    classes = ClassTable.from_meta(meta)
    area = info.mpp**2 if info.mpp else None  # µm² per target-mpp pixel
    ws = WriterSet(out_dir, classes)
    try:
        if "geojson" in outputs:
            from cellvit_trt.runtime.writers.geojson import GeoJSONWriter

            ws.writers["geojson"] = GeoJSONWriter(files["geojson"][0], classes, info.name, area, points)
        if "cells" in outputs:
            from cellvit_trt.runtime.writers.upstream_json import UpstreamJSONWriter

            if grid is None:
                raise InputError("outputs: 'cells' (upstream cells.json) needs the tiling grid")
            ws.writers["cells"] = UpstreamJSONWriter(
                *files["cells"],
                classes,
                wsi_metadata(info, grid),
                grid,
            )
        if "table" in outputs:
            from cellvit_trt.runtime.writers.table import CSVWriter, ParquetWriter

            ws.writers["csv"] = CSVWriter(files["table"][0], classes, area)
            if importlib.util.find_spec("pyarrow") is not None:
                ws.writers["parquet"] = ParquetWriter(files["table"][1], classes, area)
            else:
                log.warning(
                    "pyarrow is not installed: writing cells.csv only "
                    "(cells.parquet needs pip install 'cellvit-trt[parquet]')"
                )
        if "embeddings" in outputs:
            from cellvit_trt.runtime.writers.embeddings import EmbeddingWriter

            ws.writers["embeddings"] = EmbeddingWriter(*files["embeddings"], embedding_dtype)
        if "overlay" in outputs:
            if source is None:
                log.warning("overlay output needs the source; skipped")
            else:
                from cellvit_trt.runtime.writers.overlay import OverlayWriter

                ws.writers["overlay"] = OverlayWriter(files["overlay"][0], source, classes, overlay_window)
        if "tissue" in outputs:
            from cellvit_trt.runtime.writers.tissue_tiles import TissueTileWriter

            if grid is None:
                raise InputError("outputs: 'tissue' needs the tiling grid")
            names = tuple(getattr(meta, "tissue_names", ()) or ())
            ws.tissue = TissueTileWriter(*files["tissue"], names, grid, info)
        if "summary" in outputs:
            ws.summary_path = files["summary"][0]
    except BaseException:
        ws.abort()
        raise
    return ws
