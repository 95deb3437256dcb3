"""One warm backend, many slides: a dispatcher thread owns the backend and keeps its batches in flight.

    shared = SharedBackend(backend)          # backend already active
    view = shared.view()                     # per slide: the runner interface the pipeline expects
    h = view.submit(images); maps = view.result(h)
    shared.close()

Each slide's pipeline talks to its own view; the views' batches go to the backend in arrival order through one
bounded queue, and the dispatcher keeps up to `backend.max_in_flight` of them submitted (so a GPU backend
copies the next batch while one computes, whichever slide it belongs to). A batch that fails fails only the
slide that sent it. Backends are not thread-safe (`submit`/`result` in order), hence one owner thread.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from concurrent.futures import Future
from typing import Any

import numpy as np

from cellvit_trt.runtime.backends.base import check_images

_STOP = object()


class SharedBackend:
    def __init__(self, backend: Any, queue_batches: int = 4) -> None:
        self.backend = backend
        self._q: queue.Queue = queue.Queue(maxsize=max(1, queue_batches))
        self._thread = threading.Thread(target=self._loop, name="cvt-serve-backend", daemon=True)
        self._thread.start()

    def view(self) -> BackendView:
        return BackendView(self)

    def close(self) -> None:
        self._q.put(_STOP)
        self._thread.join(timeout=60)

    def _enqueue(self, images: np.ndarray) -> Future:
        fut: Future = Future()
        self._q.put((images, fut))
        return fut

    def _loop(self) -> None:
        be = self.backend
        pending: deque[tuple[int, Future]] = deque()
        stopping = False
        while not stopping or pending:
            # Collect the oldest batch when the backend is full, or when nothing else is waiting.
            if pending and (stopping or len(pending) >= be.max_in_flight or self._q.empty()):
                handle, fut = pending.popleft()
                try:
                    maps = be.result(handle)
                    timings = dict(getattr(be, "last_timings", {}) or {})
                except BaseException as exc:  # the batch's slide fails; the backend stays up
                    fut.set_exception(exc)
                else:
                    fut.set_result((maps, timings))
                continue
            item = self._q.get()
            if item is _STOP:
                stopping = True
                continue
            images, fut = item
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                pending.append((be.submit(images), fut))
            except BaseException as exc:
                fut.set_exception(exc)


class BackendView:
    """What `runtime.pipeline.Pipeline` needs from a backend, served by a SharedBackend."""

    kind = "shared"

    def __init__(self, shared: SharedBackend) -> None:
        be = shared.backend
        self._shared = shared
        self.kind = be.kind
        self.name = be.name
        self.meta = be.meta
        self.max_batch = be.max_batch
        self.tile_size = be.tile_size
        self.output_names = be.output_names
        self.max_in_flight = max(2, be.max_in_flight)  # one computing, one queued behind other slides
        self.last_timings: dict[str, float] = {}
        self._futures: dict[int, Future] = {}
        self._seq = 0

    def submit(self, images: np.ndarray) -> int:
        images = check_images(images, self.tile_size, self.max_batch, self.name)
        self._seq += 1
        self._futures[self._seq] = self._shared._enqueue(images)
        return self._seq

    def result(self, handle: int) -> dict[str, np.ndarray]:
        maps, self.last_timings = self._futures.pop(handle).result()
        return maps

    def infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        return self.result(self.submit(images))

    def describe(self) -> dict[str, Any]:
        return self._shared.backend.describe()
