"""Push API for scanner software: pixels come in as they are scanned, cells go out as soon as they are final.

Scanner side (any thread, one at a time):
    src = PushSource(height, width, mpp=0.25, target_mpp=0.25, maxsize=8, timeout=60)
    src.submit(pixels, y, x)       # uint8 [h, w, 3] RGB at region pixel (y, x): a scanner tile or a strip.
                                   # Blocks while `maxsize` tiles wait for the consumer (backpressure); raises
                                   # TimeoutError after `timeout` s (None: wait until abort()). The pixels
                                   # are kept even then: tiles they completed wait in order and are handed
                                   # over first by the next submit() or finish(). Overlapping submissions
                                   # overwrite.
    src.finish()                   # no more pixels: partly covered tiles are emitted (white where missing);
                                   # after a TimeoutError call it again to hand over what is left
    src.abort(exc)                 # the consumer's tiles() raises exc at once (even with a full queue)
    src.close()                    # the scanner is done with this source: submit/finish are refused
    for cells in src.results():    # what the pipeline passed to deliver(), until close_results()
        ...

Consumer side (the pipeline):
    for tile in src.tiles(): ...   # Tile objects in the order they become complete (all pixels covered)
    src.deliver(cells)             # blocking put into the bounded result queue
    src.close_results()            # end of results; idempotent

A tile is complete once every region pixel of its footprint has been submitted. Pixels are kept in one buffer
per tile row (tile_size x width); a buffer is freed when all tiles of its row are emitted, so a row-by-row
scan holds about two tile rows. `max_bands` caps how many tile rows may be open at once (InputError beyond
it), so memory never grows without bound. Tiles no submission touched are not emitted (treat as absent).
The scanner delivers pixels at the target mpp (within the tolerance); the push path does not resample.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator

import numpy as np

from cellvit_trt.errors import InputError
from cellvit_trt.runtime.sources.base import Source, SourceInfo, Tile
from cellvit_trt.runtime.sources.resolution import tolerance_for
from cellvit_trt.runtime.tiling import PAD_VALUE, TILE_OVERLAP, TILE_SIZE

_DONE = object()
_POLL_S = 0.1  # how often a blocked put/get looks at abort()


class _Band:
    """Pixels and coverage of one tile row: region rows [y0, y0 + tile_size), columns [-overlap, ...)."""

    def __init__(self, y0: int, height: int, width: int, x_pad: int) -> None:
        self.y0, self.x_pad = y0, x_pad
        self.pixels = np.full((height, width + 2 * x_pad, 3), PAD_VALUE, dtype=np.uint8)
        self.covered = np.zeros((height, width), dtype=bool)


class PushSource(Source):
    def __init__(
        self,
        height: int,
        width: int,
        mpp: float | None = None,
        target_mpp: float = 0.25,
        tile_size: int = TILE_SIZE,
        overlap: int = TILE_OVERLAP,
        maxsize: int = 8,
        timeout: float | None = 60.0,
        max_bands: int = 3,
        offset: tuple[float, float] = (0.0, 0.0),
        name: str = "push",
    ) -> None:
        if mpp is not None and abs(mpp - target_mpp) > tolerance_for(target_mpp):
            raise InputError(
                f"{name}: scanner pixels are {mpp} mpp but the model needs {target_mpp} mpp "
                f"(+-{tolerance_for(target_mpp):.3f}); the push API does not resample"
            )
        if maxsize < 1 or max_bands < 2:
            raise InputError(f"{name}: need maxsize >= 1 and max_bands >= 2, got {maxsize}, {max_bands}")
        info = SourceInfo(
            name=name,
            height=height,
            width=width,
            mpp=mpp or target_mpp,
            offset=offset,
            base_mpp=mpp,
            reader="push",
        )
        super().__init__(info, tile_size, overlap)
        self.timeout = timeout
        self.max_bands = max_bands
        self._tiles: queue.Queue = queue.Queue(maxsize=maxsize)
        self._results: queue.Queue = queue.Queue(maxsize=maxsize)
        self._bands: dict[int, _Band] = {}
        self._emitted: set[tuple[int, int]] = set()
        self._touched: set[tuple[int, int]] = set()
        self._lock = threading.Lock()
        # Tiles cut from the bands (so marked emitted) but not yet accepted by the tile queue: a put that
        # times out leaves them here, and the next submit()/finish() hands them over first, in order.
        self._outbox: deque[object] = deque()
        self._put_lock = threading.Lock()  # one flusher at a time keeps the outbox's order
        self._finished = False
        self._closed = False
        self._aborted: BaseException | None = None
        self._results_closed = False
        self.max_queued = 0  # high-water mark of the tile queue (for tests and stats)

    # -- scanner side -------------------------------------------------------------------------------------
    def submit(self, pixels: np.ndarray, y: int, x: int) -> None:
        a = np.asarray(pixels)
        if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
            raise InputError(
                f"{self.info.name}: submit expects uint8 [h, w, 3] RGB, got {a.dtype}{list(a.shape)}"
            )
        h, w = a.shape[:2]
        if y < 0 or x < 0 or y + h > self.info.height or x + w > self.info.width:
            raise InputError(
                f"{self.info.name}: submitted block y={y}..{y + h} x={x}..{x + w} leaves the "
                f"{self.info.height}x{self.info.width} region"
            )
        with self._lock:
            self._check_open("submit")
            if self._finished:
                raise InputError(f"{self.info.name}: submit after finish()")
            self._outbox.extend(self._store(a, y, x))
        self._flush()

    def finish(self) -> None:
        """No more pixels: emit every touched, not yet emitted tile (white where never covered).

        Call it again after a TimeoutError: it hands over what is left, once."""
        with self._lock:
            self._check_open("finish")
            if not self._finished:
                self._finished = True
                rest = sorted(self._touched - self._emitted)
                self._outbox.extend(self._cut(r, c) for r, c in rest)
                self._outbox.append(_DONE)
                self._bands.clear()
        self._flush()

    def abort(self, exc: BaseException) -> None:
        """Fail the consumer: its tiles() raises `exc` at once; never blocks."""
        with self._lock:
            self._finished = True
            self._aborted = exc
            self._bands.clear()
            self._outbox.clear()

    def close(self) -> None:
        """The scanner side is done with this source; later submit()/finish() calls are refused."""
        with self._lock:
            self._closed = True
            self._bands.clear()

    def results(self, timeout: float | None = None) -> Iterator[object]:
        """Cell batches in the order the pipeline delivered them, until close_results()."""
        while True:
            item = self._results.get(timeout=timeout if timeout is not None else self.timeout)
            if item is _DONE:
                return
            yield item

    # -- consumer side ------------------------------------------------------------------------------------
    def tiles(self, selection: Iterable[tuple[int, int]] | None = None) -> Iterator[Tile]:
        """Tiles as they complete; `selection` is ignored (the scan decides the order)."""
        while True:
            if self._aborted is not None:
                raise self._aborted
            try:
                item = self._tiles.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if item is _DONE:
                return
            yield item

    def deliver(self, cells: object) -> None:
        try:
            self._results.put(cells, timeout=self.timeout)
        except queue.Full:
            raise TimeoutError(
                f"{self.info.name}: the scanner did not read results for {self.timeout} s (result queue full)"
            ) from None

    def close_results(self) -> None:
        """End the results (idempotent). A full result queue raises TimeoutError; calling again retries."""
        if self._results_closed:
            return
        try:
            self._results.put(_DONE, timeout=self.timeout)
        except queue.Full:
            raise TimeoutError(
                f"{self.info.name}: the scanner did not read results for {self.timeout} s (result queue "
                "full; cannot close it)"
            ) from None
        self._results_closed = True

    def _read(self, y0: int, x0: int, h: int, w: int) -> np.ndarray:
        raise InputError(f"{self.info.name}: a push source has no random access; iterate tiles()")

    # -- internals ----------------------------------------------------------------------------------------
    def _check_open(self, what: str) -> None:
        if self._closed:
            raise InputError(f"{self.info.name}: {what} after close()")
        if self._aborted is not None:
            raise InputError(f"{self.info.name}: {what} after abort ({self._aborted})")

    def _flush(self) -> None:
        """Hand the outbox to the tile queue in order; an item leaves it only once the queue took it."""
        with self._put_lock:
            while True:
                with self._lock:
                    if not self._outbox or self._aborted is not None:
                        return
                    item = self._outbox[0]
                self._put(item)
                with self._lock:
                    if self._outbox and self._outbox[0] is item:
                        self._outbox.popleft()

    def _put(self, item: object) -> None:
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while True:
            if self._aborted is not None:
                return  # the consumer is failing anyway; nothing more to hand over
            wait = _POLL_S if deadline is None else min(_POLL_S, deadline - time.monotonic())
            try:
                self._tiles.put(item, timeout=max(0.0, wait))
                break
            except queue.Full:
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"{self.info.name}: the consumer took no tile for {self.timeout} s (queue of "
                        f"{self._tiles.maxsize} full); the pixels are kept: submit() or finish() again"
                    ) from None
        self.max_queued = max(self.max_queued, self._tiles.qsize())

    @property
    def max_band_bytes(self) -> int:
        """The most bytes its row buffers hold at once: `max_bands` bands of pixels and coverage."""
        g = self.grid
        width = g.cols * g.stride
        return self.max_bands * g.tile_size * ((width + 2 * g.overlap) * 3 + width)

    def _band(self, row: int) -> _Band:
        band = self._bands.get(row)
        if band is None:
            if len(self._bands) >= self.max_bands:
                raise InputError(
                    f"{self.info.name}: this scan order keeps more than {self.max_bands} tile rows open; "
                    "submit row by row (top to bottom) or raise max_bands"
                )
            g = self.grid
            band = _Band(g.origin(row, 0)[0], g.tile_size, g.cols * g.stride, g.overlap)
            self._bands[row] = band
        return band

    def _store(self, a: np.ndarray, y: int, x: int) -> list[Tile]:
        g = self.grid
        h, w = a.shape[:2]
        touched = g.tiles_touching(y, x, y + h, x + w)
        for row in sorted({r for r, _ in touched}):
            if all((row, c) in self._emitted for c in range(g.cols)):
                continue
            band = self._band(row)
            r0, r1 = max(y, band.y0), min(y + h, band.y0 + g.tile_size)
            band.pixels[r0 - band.y0 : r1 - band.y0, x + band.x_pad : x + w + band.x_pad] = a[r0 - y : r1 - y]
            band.covered[r0 - band.y0 : r1 - band.y0, x : x + w] = True
        ready = []
        for row, col in touched:
            if (row, col) in self._emitted:
                continue
            self._touched.add((row, col))
            if self._complete(row, col):
                ready.append(self._cut(row, col))
        return ready

    def _complete(self, row: int, col: int) -> bool:
        g, band = self.grid, self._bands[row]
        y0, x0 = g.origin(row, col)
        r0, r1 = max(0, y0) - band.y0, min(self.info.height, y0 + g.tile_size) - band.y0
        c0, c1 = max(0, x0), min(self.info.width, x0 + g.tile_size)
        return bool(band.covered[r0:r1, c0:c1].all())

    def _cut(self, row: int, col: int) -> Tile:
        g = self.grid
        y0, x0 = g.origin(row, col)
        band = self._bands.get(row)
        if band is None:
            image = np.full((g.tile_size, g.tile_size, 3), PAD_VALUE, np.uint8)
        else:
            image = band.pixels[:, x0 + band.x_pad : x0 + band.x_pad + g.tile_size].copy()
            # pixels below the region bottom stay white (never written); nothing to do
        self._emitted.add((row, col))
        if band is not None and all((row, c) in self._emitted for c in range(g.cols)):
            del self._bands[row]
        return Tile(row, col, y0, x0, image)
