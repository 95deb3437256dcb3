"""Push API end to end: a scanner pushes strips and reads final cells back while it is still scanning."""

from __future__ import annotations

import threading

import numpy as np

from cellvit_trt.runtime.cells import CellBatch
from cellvit_trt.runtime.merge import StreamingMerge
from cellvit_trt.runtime.sources import PushSource


def _cells_of(tile, grid, info) -> CellBatch:
    """A stand-in for backend + kernels: one square 'cell' per dark 40 px block of the tile."""
    from types import SimpleNamespace

    dark = tile.image[..., 0] < 100
    ys, xs = np.nonzero(dark[20::40, 20::40])
    bbox = np.stack([ys * 40 + 10, xs * 40 + 10, ys * 40 + 30, xs * 40 + 30], 1).astype(np.int32)
    contours = [
        np.array([[b[1], b[0]], [b[3] - 1, b[0]], [b[3] - 1, b[2] - 1], [b[1], b[2] - 1]]) for b in bbox
    ]
    cent = np.stack([(bbox[:, 1] + bbox[:, 3] - 1) / 2, (bbox[:, 0] + bbox[:, 2] - 1) / 2], 1)
    table = SimpleNamespace(
        bbox=bbox,
        centroid=cent,
        area=np.full(len(bbox), 400),
        type=np.ones(len(bbox), int),
        type_prob=np.ones(len(bbox), np.float32),
        contours=contours,
    )
    return CellBatch.from_tile(table, tile.row, tile.col, grid, info)


def test_scanner_gets_cells_while_scanning():
    h, w = 2880, 1920  # 3 x 2 tiles
    image = np.full((h, w, 3), 230, np.uint8)
    yy, xx = np.mgrid[0:h:40, 0:w:40]
    keep = (yy // 40 + xx // 40) % 3 == 0
    for y, x in zip(yy[keep], xx[keep], strict=True):
        image[y + 10 : y + 30, x + 10 : x + 30] = 40  # dark squares aligned with the 40 px lattice
    src = PushSource(h, w, maxsize=2, timeout=30)
    received: list[tuple[int, CellBatch]] = []
    scanned = [0]

    def scanner() -> None:
        for y in range(0, h, 240):
            src.submit(image[y : y + 240], y, 0)
            scanned[0] = y + 240
        src.finish()

    def reader() -> None:
        for batch in src.results(timeout=30):
            received.append((scanned[0], batch))

    threads = [threading.Thread(target=scanner), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    merge = StreamingMerge(src.grid, planned=None, emit=src.deliver)
    for tile in src.tiles():
        merge.add(tile.row, tile.col, _cells_of(tile, src.grid, src.info))
    merge.finish()
    src.close_results()
    for t in threads:
        t.join()
    cells = CellBatch.concat([b for _, b in received])
    assert len(cells) == int(keep.sum())  # every square once: none lost, none duplicated at the overlaps
    assert len(np.unique(cells.centroid, axis=0)) == len(cells)
    assert received[0][0] < h  # the first cells reached the scanner before the scan ended
    assert np.array_equal(cells.id, np.arange(len(cells)))
