"""One row per cell: `cells.csv` and (with pyarrow) `cells.parquet`, written in chunks.

Columns: cell_id, x, y (centroid, level-0 px), type, type_name, type_prob, area_px (target-mpp px), area_um2
(when the mpp is known), bbox_rmin, bbox_cmin, bbox_rmax, bbox_cmax (level-0 px, exclusive max), tile_row,
tile_col, cell_status, edge_position.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from cellvit_trt.runtime.cells import CellBatch
from cellvit_trt.runtime.writers.base import ClassTable, StreamFile, csv_text

log = logging.getLogger(__name__)

COLUMNS = (
    "cell_id",
    "x",
    "y",
    "type",
    "type_name",
    "type_prob",
    "area_px",
    "area_um2",
    "bbox_rmin",
    "bbox_cmin",
    "bbox_rmax",
    "bbox_cmax",
    "tile_row",
    "tile_col",
    "cell_status",
    "edge_position",
)


def columns(batch: CellBatch, classes: ClassTable, area_um2_per_px: float | None) -> dict[str, np.ndarray]:
    names = np.array([classes.name(int(t)) for t in batch.type], dtype=object)
    area_um2 = batch.area * area_um2_per_px if area_um2_per_px else np.full(len(batch), np.nan)
    return {
        "cell_id": batch.id.astype(np.int64),
        "x": batch.centroid[:, 0],
        "y": batch.centroid[:, 1],
        "type": batch.type.astype(np.int16),
        "type_name": names,
        "type_prob": batch.type_prob.astype(np.float32),
        "area_px": batch.area.astype(np.int32),
        "area_um2": np.asarray(area_um2, np.float64),
        "bbox_rmin": batch.bbox[:, 0],
        "bbox_cmin": batch.bbox[:, 1],
        "bbox_rmax": batch.bbox[:, 2],
        "bbox_cmax": batch.bbox[:, 3],
        "tile_row": batch.tile[:, 0].astype(np.int32),
        "tile_col": batch.tile[:, 1].astype(np.int32),
        "cell_status": batch.cell_status.astype(np.int8),
        "edge_position": batch.edge.any(axis=1),
    }


def _num(v: float) -> str:
    """Integer-valued floats without a fraction, others with 3 decimals (never exponent notation)."""
    return str(int(v)) if float(v).is_integer() else f"{v:.3f}"


class CSVWriter:
    def __init__(self, path: str | Path, classes: ClassTable, area_um2_per_px: float | None = None) -> None:
        self.classes, self.area = classes, area_um2_per_px
        self._file = StreamFile(path, "w", encoding="utf-8", newline="")
        self._file.fh.write(",".join(COLUMNS) + "\n")

    def write(self, batch: CellBatch) -> None:
        if not len(batch):
            return
        c = columns(batch, self.classes, self.area)
        names = [csv_text(v) for v in c["type_name"]]
        area = ["" if not np.isfinite(v) else f"{v:.3f}" for v in c["area_um2"]]
        bbox = np.stack([c["bbox_rmin"], c["bbox_cmin"], c["bbox_rmax"], c["bbox_cmax"]], 1)
        bbox_txt = [",".join(_num(v) for v in row) for row in bbox.tolist()]
        rows = zip(
            c["cell_id"].tolist(),
            c["x"].tolist(),
            c["y"].tolist(),
            c["type"].tolist(),
            names,
            c["type_prob"].tolist(),
            c["area_px"].tolist(),
            area,
            bbox_txt,
            c["tile_row"].tolist(),
            c["tile_col"].tolist(),
            c["cell_status"].tolist(),
            c["edge_position"].tolist(),
            strict=True,
        )
        text = "".join(
            f"{i},{x:.2f},{y:.2f},{t},{n},{p:.4f},{a},{um},{bb},{tr},{tc},{st},{'true' if e else 'false'}\n"
            for i, x, y, t, n, p, a, um, bb, tr, tc, st, e in rows
        )
        self._file.fh.write(text)

    def close(self, **_: object) -> None:
        self._file.close()

    def abort(self) -> None:
        self._file.abort()


class ParquetWriter:
    """Row group per chunk, into a temporary file renamed at close."""

    def __init__(self, path: str | Path, classes: ClassTable, area_um2_per_px: float | None = None) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.pa, self.classes, self.area = pa, classes, area_um2_per_px
        self.schema = pa.schema(
            [
                ("cell_id", pa.int64()),
                ("x", pa.float64()),
                ("y", pa.float64()),
                ("type", pa.int16()),
                ("type_name", pa.string()),
                ("type_prob", pa.float32()),
                ("area_px", pa.int32()),
                ("area_um2", pa.float64()),
                ("bbox_rmin", pa.float64()),
                ("bbox_cmin", pa.float64()),
                ("bbox_rmax", pa.float64()),
                ("bbox_cmax", pa.float64()),
                ("tile_row", pa.int32()),
                ("tile_col", pa.int32()),
                ("cell_status", pa.int8()),
                ("edge_position", pa.bool_()),
            ]
        )
        self._file = StreamFile(path, "wb")
        self._writer = pq.ParquetWriter(self._file.fh, self.schema, compression="zstd")

    def write(self, batch: CellBatch) -> None:
        if not len(batch):
            return
        cols = columns(batch, self.classes, self.area)
        arrays = [self.pa.array(cols[f.name], type=f.type) for f in self.schema]
        self._writer.write_table(self.pa.Table.from_arrays(arrays, schema=self.schema))

    def close(self, **_: object) -> None:
        self._writer.close()
        self._file.close()

    def abort(self) -> None:
        try:
            self._writer.close()
        except Exception:  # the file is being discarded; a close failure changes nothing
            log.debug("parquet writer close failed during abort", exc_info=True)
        self._file.abort()
