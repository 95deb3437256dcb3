"""The resume journal: atomic chunks, exact round trip of cells, refusals with reasons."""

from __future__ import annotations

import types

import numpy as np
import pytest

from cellvit_trt.errors import InputError
from cellvit_trt.runtime.cells import CellBatch
from cellvit_trt.runtime.journal import Journal
from cellvit_trt.runtime.sources.base import SourceInfo
from cellvit_trt.runtime.tiling import TileGrid

GRID = TileGrid(1000, 1000, tile_size=256, overlap=32)
INFO = SourceInfo(name="s", height=1000, width=1000, mpp=0.25, scale=2.0, offset=(10.5, -3.25))


def tile_cells(row, col, n, seed, tokens=True):
    rng = np.random.default_rng(seed)
    y, x = rng.integers(5, 240, (2, n))
    bbox = np.stack([y, x, y + 9, x + 11], 1).astype(np.int32)
    contours = [
        np.array([[b[1], b[0]], [b[3] - 1, b[0]], [b[3] - 1, b[2] - 1], [b[1], b[2] - 1]], np.int32)
        for b in bbox
    ]
    table = types.SimpleNamespace(
        bbox=bbox,
        centroid=np.stack([x + 5.0, y + 4.0], 1),
        area=np.full(n, 99),
        type=rng.integers(1, 6, n),
        type_prob=rng.random(n).astype(np.float32),
        contours=contours,
    )
    tok = rng.random((8, 16, 16)).astype(np.float16) if tokens else None
    return CellBatch.from_tile(table, row, col, GRID, INFO, tokens=tok)


def same(a: CellBatch, b: CellBatch):
    for name in (
        "centroid",
        "bbox",
        "area",
        "type",
        "type_prob",
        "tile",
        "cell_status",
        "edge",
        "bbox_region",
        "id",
        "embedding",
    ):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    for name in ("contours", "contours_region"):
        assert len(getattr(a, name)) == len(getattr(b, name))
        for x, y in zip(getattr(a, name), getattr(b, name), strict=True):
            assert x.dtype == y.dtype and np.array_equal(x, y), name


@pytest.mark.parametrize("transform", [(2.0, (10.5, -3.25)), None])
def test_round_trip_is_exact(tmp_path, transform):
    fp = {"input": "s", "tile_size": 256}
    tiles = [(0, 0, 5), (0, 1, 0), (1, 0, 7), (1, 1, 3), (2, 2, 4)]
    batches = [tile_cells(r, c, n, seed=i) for i, (r, c, n) in enumerate(tiles)]
    j = Journal.open(tmp_path / "j", fp, resume=False, chunk_tiles=2, transform=transform)
    for (r, c, _), b in zip(tiles, batches, strict=True):
        j.append(r, c, b, {"tissue_logits": np.arange(3, dtype=np.float32) + r})
    assert len(j.chunks) == 2  # the fifth tile is still buffered
    j.commit()
    again = Journal.open(tmp_path / "j", fp, resume=True, transform=transform)
    assert again.done() == {(r, c) for r, c, _ in tiles} and again.committed_tiles == 5
    out = list(again.replay())
    assert [(r, c) for r, c, _, _ in out] == [(r, c) for r, c, _ in tiles]
    for (_, _, cells, extra), ref, (r, _, _) in zip(out, batches, tiles, strict=True):
        same(cells, ref)
        np.testing.assert_array_equal(extra["tissue_logits"], np.arange(3, dtype=np.float32) + r)


def test_refusals_name_the_reason(tmp_path):
    j = Journal.open(tmp_path / "j", {"tile_size": 256, "mpp": None}, resume=False, chunk_tiles=1)
    j.append(0, 0, tile_cells(0, 0, 3, 1))
    with pytest.raises(InputError, match=r"tile_size: was 256, now 1024"):
        Journal.open(tmp_path / "j", {"tile_size": 1024, "mpp": None}, resume=True)
    chunk = tmp_path / "j" / j.chunks[0]["file"]
    chunk.write_bytes(chunk.read_bytes()[:100])
    with pytest.raises(InputError, match="unreadable"):
        list(Journal.open(tmp_path / "j", {"tile_size": 256, "mpp": None}, resume=True).replay())
    fresh = Journal.open(tmp_path / "j", {"tile_size": 256, "mpp": None}, resume=False)
    assert not (tmp_path / "j").exists() and fresh.done() == set()
    assert Journal.open(tmp_path / "none", {}, resume=True).done() == set()  # nothing to resume: fresh run
