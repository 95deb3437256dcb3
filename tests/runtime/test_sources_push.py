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


# ---- issue 16 item 6: the push API's failure paths -------------------------------------------------------
def _strip_source(**kw) -> tuple[PushSource, np.ndarray]:
    """One tile row of three 256 px tiles (stride 192): tile (0, c) is complete once columns up to its right
    edge (clipped to the region) have arrived."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (192, 576, 3), dtype=np.uint8)
    return PushSource(192, 576, tile_size=256, overlap=32, **kw), image


def test_a_tile_whose_put_timed_out_is_handed_over_later_not_lost():
    import pytest

    src, image = _strip_source(maxsize=1, timeout=0.2)
    src.submit(image[:, :224], 0, 0)  # completes tile (0, 0): queued
    with pytest.raises(TimeoutError, match="consumer took no tile"):
        src.submit(image[:, 224:416], 0, 224)  # completes (0, 1): the queue is full, nobody reads
    got = {}

    def consumer() -> None:
        for tile in src.tiles():
            got[(tile.row, tile.col)] = tile.image

    t = threading.Thread(target=consumer)
    t.start()
    src.submit(image[:, 416:], 0, 416)  # completes (0, 2); (0, 1) goes first
    src.finish()
    t.join(timeout=30)
    assert sorted(got) == [(0, 0), (0, 1), (0, 2)]
    ref = np.full((192 + 64, 576 + 64, 3), 255, np.uint8)
    ref[32 : 32 + 192, 32 : 32 + 576] = image
    for (_, col), tile in got.items():
        np.testing.assert_array_equal(tile, ref[:256, col * 192 : col * 192 + 256])


def test_finish_that_timed_out_can_be_retried():
    import pytest

    src, image = _strip_source(maxsize=1, timeout=0.2)
    src.submit(image[:, :224], 0, 0)
    with pytest.raises(TimeoutError):
        src.finish()  # tile (0, 1) (touched, partly covered) and the end marker wait
    got = []
    t = threading.Thread(target=lambda: got.extend((tile.row, tile.col) for tile in src.tiles()))
    t.start()
    src.finish()
    t.join(timeout=30)
    assert got == [(0, 0), (0, 1)]  # (0, 2) was never touched, so it is not a tile of this scan


def test_submit_after_close_is_refused():
    import pytest

    from cellvit_trt.errors import InputError

    src, image = _strip_source(maxsize=4, timeout=1)
    src.submit(image[:, :100], 0, 0)
    src.close()
    with pytest.raises(InputError, match="after close"):
        src.submit(image[:, 100:], 0, 100)
    with pytest.raises(InputError, match="after close"):
        src.finish()


def test_close_results_is_idempotent_and_a_full_queue_is_a_named_timeout():
    import pytest

    src, _ = _strip_source(maxsize=2, timeout=0.2)
    for _ in range(3):
        src.close_results()
    assert list(src.results(timeout=1)) == []
    full, _ = _strip_source(maxsize=2, timeout=0.2)
    full.deliver("a")
    full.deliver("b")
    with pytest.raises(TimeoutError, match="did not read results"):
        full.close_results()
    assert [next(iter(full.results(timeout=1)))] == ["a"]
    full.close_results()  # room again: the end marker goes in now
    assert list(full.results(timeout=1)) == ["b"]


def test_abort_reaches_a_consumer_even_when_the_tile_queue_is_full():
    import pytest

    src, image = _strip_source(maxsize=1, timeout=5)
    src.submit(image[:, :224], 0, 0)  # the queue is full
    src.abort(RuntimeError("scanner gone"))  # must not wait for room
    with pytest.raises(RuntimeError, match="scanner gone"):
        list(src.tiles())
