"""The streaming pipeline: reader(s) → batcher → backend (K batches in flight) → post-processing pool → sink.

    stats = Pipeline(backend, read=read_tile, process=postprocess, sink=merge_and_write, batch=8,
    workers=2).run(specs)

- `specs` is an iterable of tile descriptions (anything; `repr`/`str` names the tile in errors). It is
consumed
  lazily by the reader dispatcher, so a slide never has to fit in memory.
- `read(spec) -> uint8[H,W,3]` runs in `readers` threads (slide I/O releases the GIL), order is kept.
- The backend thread (the caller's thread) stacks tiles into batches and keeps `backend.max_in_flight` of them
  submitted, so on a GPU the next batch is copied in while one computes.
- `process(spec, maps) -> result` runs in a thread pool (Numba kernels release the GIL); `maps` is the tile's
  slice of the batch outputs (`fg`, `hv`, `type_map`, `tissue_logits`, [`tokens`]).
- `sink(spec, result)` runs in one thread, in tile order (the merge and the writers live there).

Every hand-off is a bounded queue, so a slow stage stalls the ones before it instead of growing memory; the
most
tiles alive at once is about `readers_queue + batch * (in_flight + 1) + post_queue`. An exception in any stage
stops all of them and is raised as `PipelineError` naming the stage and the tile; KeyboardInterrupt stops the
threads and is re-raised.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from cellvit_trt.errors import CellViTTRTError
from cellvit_trt.runtime.stats import Stats

log = logging.getLogger(__name__)

_END = object()
_TIMEOUT = object()
_POLL_S = 0.1


class PipelineError(CellViTTRTError):
    """A stage failed on a tile; `stage`, `tile` and the original exception (`__cause__`) are kept."""

    def __init__(self, stage: str, tile: Any, exc: BaseException):
        self.stage, self.tile, self.original = stage, tile, exc
        super().__init__(f"{stage} failed on tile {tile}: {exc}")


class _Stopped(Exception):
    """Raised inside a stage when another stage has failed or the run was interrupted."""


class _Queue:
    """A bounded FIFO whose put/get give up when the pipeline stops, recording its peak size."""

    def __init__(self, name: str, bound: int, stop: threading.Event, stats: Stats):
        self.name, self.bound, self._stop, self._stats = name, bound, stop, stats
        self._q: queue.Queue = queue.Queue(maxsize=bound)

    def put(self, item: Any) -> float:
        """Put, blocking while full; returns the seconds spent blocked."""
        t0 = time.perf_counter()
        while True:
            if self._stop.is_set():
                raise _Stopped
            try:
                self._q.put(item, timeout=_POLL_S)
                break
            except queue.Full:
                continue
        self._stats.seen_queue(self.name, self._q.qsize(), self.bound)
        return time.perf_counter() - t0

    def ready(self) -> bool:
        return not self._q.empty()

    def get(self, timeout: float | None = None) -> tuple[Any, float]:
        """Get, blocking while empty; after `timeout` s (if given) returns (_TIMEOUT, waited)."""
        t0 = time.perf_counter()
        while True:
            if self._stop.is_set():
                raise _Stopped
            wait = _POLL_S if timeout is None else min(_POLL_S, max(0.0, t0 + timeout - time.perf_counter()))
            try:
                return self._q.get(timeout=wait), time.perf_counter() - t0
            except queue.Empty:
                if timeout is not None and time.perf_counter() - t0 >= timeout:
                    return _TIMEOUT, time.perf_counter() - t0


class Pipeline:
    def __init__(
        self,
        backend,
        read: Callable[[Any], np.ndarray],
        process: Callable[[Any, dict], Any],
        sink: Callable[[Any, Any], None],
        batch: int | None = None,
        workers: int = 2,
        readers: int = 1,
        queue_size: int | None = None,
        in_flight: int | None = None,
        progress: Callable[[int], None] | None = None,
        batch_wait_s: float | None = None,
    ):
        self.backend = backend
        self.read, self.process, self.sink = read, process, sink
        self.batch = int(batch or backend.max_batch)
        if not 1 <= self.batch <= backend.max_batch:
            raise ValueError(
                f"batch {self.batch} must be within 1..{backend.max_batch} (the backend's maximum)"
            )
        self.workers = max(1, int(workers))
        self.readers = max(1, int(readers))
        self.in_flight = max(1, int(in_flight or getattr(backend, "max_in_flight", 1)))
        self.read_bound, self.post_bound = self.bounds(self.batch, self.workers, self.readers, queue_size)
        self.progress = progress
        # None: a batch waits until it is full (a file's tiles are all there). A number: once a batch has a
        # tile, no more than this is waited for the next one, so a slow live source (a scanner) does not
        # hold finished tiles back while the batch fills.
        self.batch_wait_s = batch_wait_s
        self.stats = Stats()
        self._stop = threading.Event()
        self._error: PipelineError | None = None
        self._err_lock = threading.Lock()

    @staticmethod
    def bounds(batch: int, workers: int, readers: int, queue_size: int | None = None) -> tuple[int, int]:
        """(tiles queue, post-processing queue) bounds: enough tiles to fill a batch while the previous one
        is stacked, enough post-processing work to keep every worker busy once (the memory budget counts
        them)."""
        workers, readers = max(1, int(workers)), max(1, int(readers))
        return int(queue_size or max(batch, 2 * readers)), int(queue_size or 2 * workers)

    # ---- failure handling -------------------------------------------------------------------------------
    def _fail(self, stage: str, tile: Any, exc: BaseException) -> None:
        with self._err_lock:
            if self._error is None:
                self._error = exc if isinstance(exc, PipelineError) else PipelineError(stage, tile, exc)
                self._error.__cause__ = exc if not isinstance(exc, PipelineError) else exc.__cause__
        self._stop.set()

    # ---- stages -----------------------------------------------------------------------------------------
    def _timed_read(self, spec: Any) -> np.ndarray:
        t0 = time.perf_counter()
        try:
            img = self.read(spec)
        except BaseException as exc:
            raise PipelineError("read", spec, exc) from exc
        t = self.backend.tile_size
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.shape != (t, t, 3):
            got = f"{img.dtype}{list(img.shape)}" if isinstance(img, np.ndarray) else type(img).__name__
            raise PipelineError("read", spec, ValueError(f"got a tile {got}, expected uint8[{t}, {t}, 3]"))
        self.stats.add("read", time.perf_counter() - t0)
        return img

    def _timed_process(self, spec: Any, maps: dict) -> Any:
        if self._stop.is_set():
            raise _Stopped
        t0 = time.perf_counter()
        try:
            res = self.process(spec, maps)
        except BaseException as exc:
            raise PipelineError("post-process", spec, exc) from exc
        self.stats.add("post", time.perf_counter() - t0)
        return res

    def _reader(self, specs: Iterable[Any], q: _Queue, pool: ThreadPoolExecutor) -> None:
        spec = None
        try:
            for spec in specs:
                q.put((spec, pool.submit(self._timed_read, spec)))
            q.put(_END)
        except _Stopped:
            pass
        except BaseException as exc:  # the spec iterator itself failed (e.g. tissue detection)
            self._fail("read", spec if spec is not None else "<tile list>", exc)

    def _sink(self, q: _Queue) -> None:
        spec = None
        try:
            while True:
                item, _ = q.get()
                if item is _END:
                    return
                spec, fut = item
                res = _wait(fut, self._stop)
                t0 = time.perf_counter()
                try:
                    self.sink(spec, res)
                except BaseException as exc:
                    raise PipelineError("merge/write", spec, exc) from exc
                self.stats.add("sink", time.perf_counter() - t0)
                self.stats.tiles += 1
                if self.progress is not None:
                    self.progress(1)
        except _Stopped:
            pass
        except BaseException as exc:
            self._fail("merge/write", spec, exc)

    # ---- the backend loop (caller's thread) ---------------------------------------------------------------
    def run(self, specs: Iterable[Any]) -> Stats:
        st = self.stats
        tiles_q = _Queue("tiles", self.read_bound, self._stop, st)
        post_q = _Queue("post", self.post_bound, self._stop, st)
        read_pool = ThreadPoolExecutor(self.readers, thread_name_prefix="cvt-read")
        post_pool = ThreadPoolExecutor(self.workers, thread_name_prefix="cvt-post")
        threads = [
            threading.Thread(
                target=self._reader, args=(specs, tiles_q, read_pool), name="cvt-reader", daemon=True
            ),
            threading.Thread(target=self._sink, args=(post_q,), name="cvt-sink", daemon=True),
        ]
        t_start, cpu_start = time.perf_counter(), time.process_time()
        for t in threads:
            t.start()
        try:
            self._backend_loop(tiles_q, post_q, post_pool)
            while threads[1].is_alive():  # the sink drains everything before returning; in slices, so that
                threads[1].join(_POLL_S)  # a signal another thread received is handled here (Ctrl-C)
        except _Stopped:
            pass
        except BaseException as exc:
            if not isinstance(exc, (KeyboardInterrupt, SystemExit)):
                self._fail("infer", getattr(exc, "tile", "<batch>"), exc)
            else:
                self._stop.set()
            self._shutdown(threads, read_pool, post_pool)
            if self._error is not None and not isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise self._error from self._error.__cause__
            raise
        self._shutdown(threads, read_pool, post_pool)
        st.wall_s = time.perf_counter() - t_start
        st.cpu_s = time.process_time() - cpu_start
        if self._error is not None:
            raise self._error from self._error.__cause__
        return st

    def _shutdown(self, threads, read_pool, post_pool) -> None:
        self._stop.set()  # after a failure: stop every stage; after success: everything has drained already
        for t in threads:
            t.join(timeout=10)
        read_pool.shutdown(wait=True, cancel_futures=True)
        post_pool.shutdown(wait=True, cancel_futures=True)

    def _backend_loop(self, tiles_q: _Queue, post_q: _Queue, post_pool: ThreadPoolExecutor) -> None:
        st, be = self.stats, self.backend
        in_flight: deque[tuple[int, list[Any]]] = deque()
        t_loop = time.perf_counter()
        done = False
        while not done or in_flight:
            # Submit more while there is room, unless no tile is waiting and a batch is already in flight:
            # then hand that batch to post-processing first instead of idling on a slow reader.
            if not done and len(in_flight) < self.in_flight and (not in_flight or tiles_q.ready()):
                specs, images, done = self._gather(tiles_q)
                if specs:
                    t0 = time.perf_counter()
                    batch = np.stack(images)
                    del images
                    st.add("batch", time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    try:
                        handle = be.submit(batch)
                    except Exception as exc:  # Ctrl-C / SIGTERM land here (main thread): not a tile's fault
                        raise PipelineError("infer", _names(specs), exc) from exc
                    st.add("infer", time.perf_counter() - t0)
                    in_flight.append((handle, specs))
                    st.batches += 1
                continue
            handle, specs = in_flight.popleft()
            t0 = time.perf_counter()
            try:
                maps = be.result(handle)
            except Exception as exc:
                raise PipelineError("infer", _names(specs), exc) from exc
            st.add("infer", time.perf_counter() - t0)
            st.add_device(getattr(be, "last_timings", {}) or {})
            for i, spec in enumerate(specs):
                tile_maps = {k: v[i] for k, v in maps.items()}
                fut = post_pool.submit(self._timed_process, spec, tile_maps)
                st.backend_wait_output_s += post_q.put((spec, fut))
        post_q.put(_END)
        st.backend_s = time.perf_counter() - t_loop

    def _gather(self, tiles_q: _Queue) -> tuple[list[Any], list[np.ndarray], bool]:
        """Up to `batch` tiles in order; the time spent waiting for them is backend idle time."""
        specs: list[Any] = []
        images: list[np.ndarray] = []
        while len(specs) < self.batch:
            item, waited = tiles_q.get(self.batch_wait_s if specs else None)
            self.stats.backend_wait_input_s += waited
            if item is _TIMEOUT:
                return specs, images, False
            if item is _END:
                return specs, images, True
            spec, fut = item
            t0 = time.perf_counter()
            img = _wait(fut, self._stop)
            self.stats.backend_wait_input_s += time.perf_counter() - t0
            specs.append(spec)
            images.append(img)
        return specs, images, False


def _wait(fut: Future, stop: threading.Event) -> Any:
    while True:
        if stop.is_set() and not fut.done():
            raise _Stopped
        try:
            return fut.result(timeout=_POLL_S)
        except TimeoutError:
            continue


def _names(specs: list[Any]) -> str:
    return ", ".join(str(s) for s in specs[:4]) + (" ..." if len(specs) > 4 else "")
