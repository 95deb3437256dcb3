"""QuPath-ready GeoJSON: an RFC 7946 FeatureCollection with one Feature per cell, written as cells arrive.

Each Feature is what QuPath 0.4/0.5 exports for a detection, so File > Import objects gives one editable
detection per nucleus, classified and coloured:

    {"type": "Feature", "id": "<uuid5 of slide + cell id>",
     "geometry": {"type": "Polygon", "coordinates": [[[x, y], ..., [x0, y0]]]},      # level-0 px, closed ring
     "properties": {"objectType": "detection",
                    "classification": {"name": "Neoplastic", "color": [255, 0, 0]},
                    "measurements": {"cell_id": 7, "type_prob": 0.93, "area_px": 412, "area_um2": 25.75},
                    "cell_id": 7, "type": 1, "type_name": "Neoplastic", "type_prob": 0.93}}

Unlike upstream (a JSON list with one MultiPolygon annotation per class, reference §10), geopandas reads it
(`geopandas.read_file`), and every cell stays a separate object. `points=True` writes centroids instead.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np

from cellvit_trt.runtime.cells import CellBatch
from cellvit_trt.runtime.writers.base import ClassTable, StreamFile

_NS = uuid.UUID("6f1c1d8e-5b0e-4c1e-9a55-3c2f0e4b7a10")  # namespace of this package's cell ids
DECIMALS = 2  # coordinates: 1/100 of a level-0 pixel


class GeoJSONWriter:
    def __init__(
        self,
        path: str | Path,
        classes: ClassTable,
        slide: str = "",
        area_um2_per_px: float | None = None,
        points: bool = False,
    ) -> None:
        self.classes, self.slide, self.points = classes, slide, points
        self.area_um2_per_px = area_um2_per_px
        self._file = StreamFile(path, "w", encoding="utf-8")
        self._file.fh.write('{"type": "FeatureCollection", "features": [\n')
        self._first = True
        self.count = 0

    def _feature(self, batch: CellBatch, i: int) -> dict:
        cid, t = int(batch.id[i]), int(batch.type[i])
        if self.points:
            geometry = {"type": "Point", "coordinates": np.round(batch.centroid[i], DECIMALS).tolist()}
        else:
            ring = np.round(batch.contours[i], DECIMALS)
            ring = np.concatenate([ring, ring[:1]]) if len(ring) and (ring[0] != ring[-1]).any() else ring
            as_int = ring.astype(np.int64)
            if (as_int == ring).all():  # integer slide coordinates (scale 1): shorter and faster to write
                ring = as_int
            geometry = {"type": "Polygon", "coordinates": [ring.tolist()]}
        prob = round(float(batch.type_prob[i]), 4)
        measurements = {"cell_id": cid, "type_prob": prob, "area_px": int(batch.area[i])}
        if self.area_um2_per_px:
            measurements["area_um2"] = round(int(batch.area[i]) * self.area_um2_per_px, 3)
        return {
            "type": "Feature",
            "id": str(uuid.uuid5(_NS, f"{self.slide}:{cid}")),
            "geometry": geometry,
            "properties": {
                "objectType": "detection",
                "classification": {"name": self.classes.name(t), "color": list(self.classes.color(t))},
                "measurements": measurements,
                "cell_id": cid,
                "type": t,
                "type_name": self.classes.name(t),
                "type_prob": prob,
            },
        }

    def write(self, batch: CellBatch) -> None:
        parts = []
        for i in range(len(batch)):
            parts.append(
                ("" if self._first else ",\n") + json.dumps(self._feature(batch, i), separators=(",", ":"))
            )
            self._first = False
        self._file.fh.write("".join(parts))
        self.count += len(batch)

    def close(self, **_: object) -> None:
        self._file.fh.write("\n]}\n")
        self._file.close()

    def abort(self) -> None:
        self._file.abort()
