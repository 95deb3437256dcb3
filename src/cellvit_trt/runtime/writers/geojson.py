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

Every polygon is valid (OGC simple features, shapely `is_valid`): an OpenCV contour traced around a one-pixel
neck or spur touches or crosses itself, which QuPath, GEOS and PostGIS reject or mis-measure. `valid_ring`
repairs such a ring into exactly one Polygon with the same pixels (see its docstring). Only this file is
repaired: cells.json / cell_detection.json keep the raw contours, exactly as upstream writes them (parity).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import shapely
from shapely.geometry import Polygon

from cellvit_trt.runtime.cells import CellBatch
from cellvit_trt.runtime.writers.base import ClassTable, StreamFile

_NS = uuid.UUID("6f1c1d8e-5b0e-4c1e-9a55-3c2f0e4b7a10")  # namespace of this package's cell ids
DECIMALS = 2  # coordinates: 1/100 of a level-0 pixel
_GRID = 10.0**-DECIMALS
_BRIDGE = 0.25  # px: closing radius that joins lobes touching at a vertex, far below a pixel


def _polygonal_parts(geom) -> list[Polygon]:
    if geom.geom_type == "Polygon":
        return [geom] if not geom.is_empty else []
    return [p for g in getattr(geom, "geoms", ()) for p in _polygonal_parts(g)]


def valid_ring(ring: np.ndarray) -> np.ndarray:
    """A closed, valid exterior ring for one cell's contour (x, y), rounded to DECIMALS.

    A valid ring comes back as it is. An invalid one (self-touching at a one-pixel neck, or a zero-width spike
    out and back along the same pixels) goes through `shapely.make_valid`, which keeps every pixel of the
    contour's area but may split it into lobes; lobes that only touch at a vertex are joined by a closing of
    a quarter pixel (mitre joins keep the axis-aligned outline), and what is still apart keeps its largest
    piece. The result is one Polygon whose area and centroid stay those of the contour's pixels
    (tests/runtime/test_geojson_valid.py measures it on real model output).
    """
    ring = np.round(np.asarray(ring, np.float64), DECIMALS)
    if len(ring) and (ring[0] != ring[-1]).any():
        ring = np.concatenate([ring, ring[:1]])
    if len(ring) >= 4:
        poly = Polygon(ring)
        if poly.is_valid:
            return ring
        parts = _polygonal_parts(shapely.make_valid(poly))
    else:
        parts = []
    if len(parts) > 1:
        closed = shapely.union_all([p.buffer(_BRIDGE, join_style="mitre") for p in parts])
        parts = _polygonal_parts(closed.buffer(-_BRIDGE, join_style="mitre")) or parts
    if not parts:  # degenerate (collinear points): the pixels it covers, as a pixel-wide outline
        line = shapely.LineString(ring) if len(ring) > 1 else shapely.Point(ring[0]) if len(ring) else None
        if line is None:
            return ring
        parts = _polygonal_parts(line.buffer(0.5, cap_style="square", join_style="mitre"))
    best = max(parts, key=lambda p: p.area)
    best = Polygon(best.exterior)  # a cell has no holes in its mask's outer contour
    snapped = _polygonal_parts(shapely.set_precision(best, _GRID))
    best = max(snapped, key=lambda p: p.area) if snapped else best
    return np.round(np.asarray(best.exterior.coords), DECIMALS)


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
            ring = valid_ring(batch.contours[i])
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


def write_geojson(
    path: str | Path,
    cells,
    class_names=None,
    *,
    slide: str = "",
    mpp: float | None = None,
    points: bool = False,
) -> int:
    """Write cells as QuPath GeoJSON, atomically; returns the number of cells written.

    `cells`: a tile's `CellTable` (`PostProcessor.process_tile(...).cells`, tile pixels) or a `CellBatch` from
    a run (level-0 slide pixels). `class_names`: names by type id (e.g. `backend.meta.class_names`; default
    PanNuke's). `mpp`: microns per pixel of the coordinates, for `area_um2`.
    """
    from types import SimpleNamespace

    classes = ClassTable.from_meta(SimpleNamespace(class_names=tuple(class_names or ()), class_colors=()))
    writer = GeoJSONWriter(path, classes, slide, mpp**2 if mpp else None, points)
    try:
        writer.write(cells)
    except BaseException:
        writer.abort()
        raise
    writer.close()
    return writer.count
