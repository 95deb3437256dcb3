"""Writers round trip: geopandas/pandas/numpy read back what was streamed; abort leaves nothing behind."""

from __future__ import annotations

import json
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from cellvit_trt.runtime.cells import CellBatch
from cellvit_trt.runtime.merge import StreamingMerge
from cellvit_trt.runtime.sources import ArraySource
from cellvit_trt.runtime.writers import OUTPUTS, open_writers

META = SimpleNamespace(
    class_names=("Background", "Neoplastic", "Inflammatory", "Connective", "Dead", "Epithelial"),
    class_colors=((0, 0, 0), (255, 0, 0), (34, 221, 77), (35, 92, 236), (254, 255, 0), (255, 159, 68)),
    tissue_names=("Breast", "Colon", "Lung"),
)


def _table(rng, n: int, tile: int = 1024) -> SimpleNamespace:
    """n square cells (some on the tile border) as the kernels' CellTable would report them."""
    r0 = rng.integers(0, tile - 12, n)
    c0 = rng.integers(0, tile - 12, n)
    r0[:3], c0[3:6] = 0, tile - 12  # border-touching cells
    s = rng.integers(6, 12, n)
    bbox = np.stack([r0, c0, np.minimum(r0 + s, tile), np.minimum(c0 + s, tile)], 1).astype(np.int32)
    contours = [
        np.array([[b[1], b[0]], [b[3] - 1, b[0]], [b[3] - 1, b[2] - 1], [b[1], b[2] - 1]], np.int32)
        for b in bbox
    ]
    centroid = np.stack([(bbox[:, 1] + bbox[:, 3] - 1) / 2, (bbox[:, 0] + bbox[:, 2] - 1) / 2], 1)
    return SimpleNamespace(
        bbox=bbox,
        centroid=centroid,
        area=((bbox[:, 2] - bbox[:, 0]) * (bbox[:, 3] - bbox[:, 1])),
        type=rng.integers(1, 6, n),
        type_prob=rng.uniform(0.5, 1, n).astype(np.float32),
        contours=contours,
    )


@pytest.fixture()
def run(tmp_path):
    """Two tiles through the merge into every writer; the source has mpp 0.25 and scale 2 (x80 pixels)."""
    rng = np.random.default_rng(0)
    src = ArraySource(np.full((1800, 3800, 3), 200, np.uint8), mpp=0.125, target_mpp=0.25)
    assert src.info.scale == 2.0 and (src.grid.rows, src.grid.cols) == (1, 2)
    out = tmp_path / "out"
    writers = open_writers(
        out, OUTPUTS, info=src.info, meta=META, grid=src.grid, source=src, overlay_window=(0, 0, 512, 512)
    )
    batches, tokens = [], rng.normal(size=(8, 64, 64)).astype(np.float16)
    merge = StreamingMerge(
        src.grid, planned=list(src.grid.tiles()), emit=lambda b: (batches.append(b), writers.write(b))
    )
    for row, col in src.grid.tiles():
        merge.add(
            row, col, CellBatch.from_tile(_table(rng, 200), row, col, src.grid, src.info, tokens=tokens)
        )
        writers.add_tile_tissue(row, col, rng.normal(size=3))
    merge.finish()
    summary = writers.close({"timing": {"wall_s": 1.0}, "settings": {"batch": 8}})
    return SimpleNamespace(out=out, cells=CellBatch.concat(batches), summary=summary, tokens=tokens, src=src)


def test_geojson_is_a_feature_collection_geopandas_reads(run):
    import geopandas

    doc = json.loads((run.out / "cells.geojson").read_text())
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == len(run.cells)
    f = doc["features"][0]
    assert f["geometry"]["type"] == "Polygon" and f["properties"]["objectType"] == "detection"
    ring = f["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1] and len(ring) >= 4
    cls = f["properties"]["classification"]
    assert cls["name"] in META.class_names[1:] and cls["color"] == list(
        META.class_colors[META.class_names.index(cls["name"])]
    )
    assert {"cell_id", "type_prob", "area_px", "area_um2"} <= set(f["properties"]["measurements"])
    df = geopandas.read_file(run.out / "cells.geojson")
    assert len(df) == len(run.cells) and df.geometry.is_valid.all()
    assert sorted(df["cell_id"]) == sorted(run.cells.id.tolist())
    # level-0 coordinates: scale 2 -> polygon bounds equal the level-0 bbox
    i = int(np.flatnonzero(df["cell_id"].to_numpy() == run.cells.id[0])[0])
    minx, miny, maxx, maxy = df.geometry.iloc[i].bounds
    b = run.cells.bbox[0]
    assert (
        (miny, minx) == (b[0], b[1]) and maxx == pytest.approx(b[3] - 2) and maxy == pytest.approx(b[2] - 2)
    )


def test_upstream_json_fields(run):
    cells = json.loads((run.out / "cells.json").read_text())
    det = json.loads((run.out / "cell_detection.json").read_text())
    assert set(cells) == {"wsi_metadata", "type_map", "cells"} and set(det) == set(cells)
    assert cells["type_map"] == {
        "1": "Neoplastic",
        "2": "Inflammatory",
        "3": "Connective",
        "4": "Dead",
        "5": "Epithelial",
    }
    assert len(cells["cells"]) == len(det["cells"]) == len(run.cells)
    required = {
        "bbox",
        "centroid",
        "contour",
        "type_prob",
        "type",
        "patch_coordinates",
        "cell_status",
        "offset_global",
        "edge_position",
    }
    for c in cells["cells"]:
        assert required <= set(c)
        assert np.array(c["bbox"]).shape == (2, 2) and c["centroid"] == np.rint(c["centroid"]).tolist()
        assert ("edge_information" in c) == c["edge_position"]
        if c["edge_position"]:
            assert set(c["edge_information"]) == {"position", "edge_patches"}
    assert set(det["cells"][0]) == {"bbox", "centroid", "type"}
    assert cells["wsi_metadata"]["patch_size"] == 1024 and cells["wsi_metadata"]["downsampling"] == 2.0


def test_tables_embeddings_tissue_overlay_summary(run):
    import pandas as pd

    csv = pd.read_csv(run.out / "cells.csv")
    pq = pd.read_parquet(run.out / "cells.parquet")
    for df in (csv, pq):
        assert len(df) == len(run.cells)
        assert list(df.columns[:6]) == ["cell_id", "x", "y", "type", "type_name", "type_prob"]
        np.testing.assert_allclose(df["area_um2"], df["area_px"] * 0.0625, atol=1e-3)
    assert (pq["cell_id"].to_numpy() == run.cells.id).all()
    np.testing.assert_allclose(pq["x"], run.cells.centroid[:, 0])
    emb = np.load(run.out / "embeddings.npy")
    assert emb.dtype == np.float16 and emb.shape == (len(run.cells), 8)
    index = pd.read_csv(run.out / "embeddings_index.csv")
    assert (index["cell_id"].to_numpy() == run.cells.id).all() and (index["row"] == np.arange(len(emb))).all()
    np.testing.assert_allclose(emb, run.cells.embedding.astype(np.float16))
    # upstream token rule: mean over bbox/16, min floored, max ceiled
    b = (
        run.cells.bbox_region[0]
        - np.r_[run.src.grid.origin(*run.cells.tile[0]), run.src.grid.origin(*run.cells.tile[0])]
    )
    lo, hi = np.floor(b[:2] / 16).astype(int), np.ceil(b[2:] / 16).astype(int)
    want = run.tokens[:, lo[0] : hi[0], lo[1] : hi[1]].astype(np.float32).mean(axis=(1, 2))
    np.testing.assert_allclose(emb[0], want, atol=2e-3)
    tiles = pd.read_csv(run.out / "tissue_tiles.csv")
    assert len(tiles) == 2 and set(tiles["tissue_name"]) <= set(META.tissue_names)
    assert json.loads((run.out / "tissue_tiles.json").read_text())["tiles"] == 2
    png = cv2.imread(str(run.out / "overlay.png"))
    assert png.shape == (512, 512, 3) and (png != 200).any()  # contours drawn over the grey image
    summary = json.loads((run.out / "summary.json").read_text())
    assert summary["cells_total"] == len(run.cells) and sum(summary["cells_per_class"].values()) == len(
        run.cells
    )
    assert summary["timing"] == {"wall_s": 1.0} and "numpy" in summary["versions"]
    assert not [p.name for p in run.out.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_abort_leaves_nothing(tmp_path):
    src = ArraySource(np.full((500, 500, 3), 200, np.uint8))
    out = tmp_path / "out"
    writers = open_writers(out, OUTPUTS, info=src.info, meta=META, grid=src.grid, source=src)
    rng = np.random.default_rng(1)
    batch = CellBatch.from_tile(
        _table(rng, 20), 0, 0, src.grid, src.info, tokens=np.zeros((4, 64, 64), np.float32)
    )
    batch.id = np.arange(len(batch))
    writers.write(batch)
    writers.add_tile_tissue(0, 0, np.zeros(3))
    writers.abort()
    assert list(out.iterdir()) == []
    # a failure inside a write (cells without embeddings) is the caller's to abort: same result
    writers = open_writers(out, ["geojson", "embeddings"], info=src.info, grid=src.grid)
    batch.embedding = None
    with pytest.raises(Exception, match="no embedding"):
        try:
            writers.write(batch)
        except BaseException:
            writers.abort()
            raise
    assert list(out.iterdir()) == []
