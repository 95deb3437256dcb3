"""cells.geojson holds only valid polygons, one per cell, with the pixels of the cell's contour.

OpenCV contours of noisy network masks touch or cross themselves at one-pixel necks and spurs (5.3 % of the
demo's cells). The GeoJSON writer repairs them (`valid_ring`); these tests build such masks, check that the
raw rings really are invalid (else the test proves nothing), and that every written polygon is valid, keeps
the cell's pixels (IoU of the rasterised outlines) and its centroid.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import shapely
from shapely.geometry import Polygon, shape

from cellvit_trt.kernels import PostProcessor
from cellvit_trt.runtime.writers import write_geojson
from cellvit_trt.runtime.writers.geojson import valid_ring
from cellvit_trt.synthetic.targets import make_targets


def _noisy_tile(seed: int, size: int = 256, n: int = 60) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """fg / hv / type maps like a weak network's: random ellipses, a salt of flipped fg pixels, noisy HV."""
    rng = np.random.default_rng(seed)
    inst = np.zeros((size, size), np.int32)
    for i in range(1, n + 1):
        c = tuple(int(v) for v in rng.uniform(0, size, 2))
        axes = tuple(int(v) for v in rng.uniform(3, 12, 2))
        cv2.ellipse(inst, c, axes, float(rng.uniform(0, 180)), 0, 360, i, -1)
    types = rng.integers(1, 6, inst.max() + 1)
    t = make_targets(inst, types)
    fg = t.binary.copy()
    flip = rng.random(fg.shape) < 0.08
    fg[flip] = 1 - fg[flip]
    hv = (t.hv + rng.normal(0, 0.2, t.hv.shape)).astype(np.float32)
    return fg.astype(np.uint8), hv, t.type_map.astype(np.uint8)


def _pixels(ring: np.ndarray, shape_: tuple[int, int]) -> np.ndarray:
    m = np.zeros(shape_, np.uint8)
    cv2.fillPoly(m, [np.rint(ring).astype(np.int32).reshape(-1, 1, 2)], 1)
    return m.astype(bool)


@pytest.fixture(scope="module")
def noisy_cells():
    pp = PostProcessor()
    return [pp.process_tile(*_noisy_tile(seed)).cells for seed in range(4)]


def test_noisy_masks_give_invalid_raw_rings_and_every_repaired_one_is_valid(noisy_cells):
    raw_invalid = repaired = 0
    for cells in noisy_cells:
        for contour in cells.contours:
            if len(contour) >= 3 and not Polygon(contour).is_valid:
                raw_invalid += 1
                ring = valid_ring(contour)
                poly = Polygon(ring)
                assert poly.is_valid and poly.geom_type == "Polygon" and poly.area > 0
                a, b = _pixels(contour, (300, 300)), _pixels(ring, (300, 300))
                iou = (a & b).sum() / max((a | b).sum(), 1)
                assert iou >= 0.9, f"repair changed the cell's pixels (IoU {iou:.2f})"
                ca, cb = np.argwhere(a).mean(0), np.argwhere(b).mean(0)
                assert np.hypot(*(ca - cb)) < 1.0
                repaired += 1
    assert raw_invalid >= 5, f"only {raw_invalid} invalid raw rings: the masks no longer test the repair"
    assert repaired == raw_invalid


def test_written_geojson_is_100_percent_valid_one_polygon_per_cell(noisy_cells, tmp_path):
    for i, cells in enumerate(noisy_cells):
        path = tmp_path / f"t{i}.geojson"
        assert write_geojson(path, cells, mpp=0.25) == len(cells)
        features = json.loads(path.read_text())["features"]
        geoms = [shape(f["geometry"]) for f in features]
        assert len(geoms) == len(cells)
        assert all(g.geom_type == "Polygon" and g.is_valid for g in geoms)
        ids = [f["properties"]["cell_id"] for f in features]
        assert ids == [int(v) for v in cells.id]


@pytest.mark.parametrize(
    "ring",
    [
        # a figure eight: two squares touching at one vertex
        [(0, 0), (4, 0), (4, 4), (8, 4), (8, 8), (4, 8), (4, 4), (0, 4)],
        # a square with a zero-width spike out and back along one line
        [(0, 0), (6, 0), (6, 3), (10, 3), (6, 3), (6, 6), (0, 6)],
        # a bow tie (crossing edges)
        [(0, 0), (6, 6), (6, 0), (0, 6)],
        # collinear points: a one-pixel-wide line of pixels
        [(0, 0), (5, 0), (9, 0)],
    ],
    ids=["figure-eight", "spike", "bow-tie", "line"],
)
def test_each_kind_of_invalid_ring_becomes_one_valid_polygon(ring):
    raw = np.asarray(ring, np.float64)
    assert not Polygon(raw).is_valid
    fixed = Polygon(valid_ring(raw))
    assert fixed.is_valid and fixed.area > 0
    assert shapely.get_num_interior_rings(fixed) == 0


def test_valid_rings_are_written_unchanged():
    ring = np.array([[0, 0], [5, 0], [5, 3], [0, 3]], np.float64)
    out = valid_ring(ring)
    assert out.tolist() == [[0, 0], [5, 0], [5, 3], [0, 3], [0, 0]]
