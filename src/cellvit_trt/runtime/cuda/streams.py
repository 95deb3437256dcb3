"""Streams, events and CUDA graphs as small owned objects over cuda-python handles."""

from __future__ import annotations

import logging
from typing import Any

from cellvit_trt.runtime.cuda import api

log = logging.getLogger(__name__)


class Stream:
    """A non-blocking stream (never synchronises with the legacy default stream)."""

    def __init__(self) -> None:
        self.handle: Any = api.call("cudaStreamCreateWithFlags", api.cudart().cudaStreamNonBlocking)

    def __int__(self) -> int:
        return int(self.handle)

    def wait(self, event: Event) -> None:
        api.call("cudaStreamWaitEvent", self.handle, event.handle, 0)

    def synchronize(self) -> None:
        api.call("cudaStreamSynchronize", self.handle)

    def close(self) -> None:
        if self.handle is not None:
            handle, self.handle = self.handle, None
            try:
                api.call("cudaStreamDestroy", handle)
            except api.CudaError as exc:
                log.warning("destroying a CUDA stream failed: %s", exc)


class Event:
    """An event; `timing=False` (the default for ordering-only events) makes record/wait cheaper."""

    def __init__(self, timing: bool = False) -> None:
        rt = api.cudart()
        flags = rt.cudaEventDefault if timing else rt.cudaEventDisableTiming
        self.handle: Any = api.call("cudaEventCreateWithFlags", flags)

    def __int__(self) -> int:
        return int(self.handle)

    def record(self, stream: Stream) -> None:
        api.call("cudaEventRecord", self.handle, stream.handle)

    def synchronize(self) -> None:
        api.call("cudaEventSynchronize", self.handle)

    def done(self) -> bool:
        rt = api.cudart()
        err = api.cudart().cudaEventQuery(self.handle)
        err = err[0] if isinstance(err, tuple) else err
        if err == rt.cudaError_t.cudaErrorNotReady:
            return False
        api.cuda_call((err,), "cudaEventQuery")
        return True

    def close(self) -> None:
        if self.handle is not None:
            handle, self.handle = self.handle, None
            try:
                api.call("cudaEventDestroy", handle)
            except api.CudaError as exc:
                log.warning("destroying a CUDA event failed: %s", exc)


def drain(streams) -> None:
    """Wait for every stream given (None and repeats skipped); failures are logged: this runs on teardown."""
    seen: set[int] = set()
    for st in streams:
        if st is None or st.handle is None or id(st) in seen:
            continue
        seen.add(id(st))
        try:
            st.synchronize()
        except api.CudaError as exc:
            log.warning("synchronising a CUDA stream on teardown failed: %s", exc)


def elapsed_ms(start: Event, end: Event) -> float:
    return float(api.call("cudaEventElapsedTime", start.handle, end.handle))


class Graph:
    """A captured, instantiated CUDA graph, replayed with `launch(stream)`.

    Capture only after one warm-up enqueue with the final shapes and addresses (reference/tensorrt.md §10);
    the capture is thread-local so other threads' CUDA calls are not swept into it.
    """

    def __init__(self, stream: Stream, enqueue) -> None:
        rt = api.cudart()
        api.call(
            "cudaStreamBeginCapture", stream.handle, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        )
        try:
            enqueue()
        finally:
            graph = api.call("cudaStreamEndCapture", stream.handle)
        self._graph = graph
        self._exec = api.call("cudaGraphInstantiate", graph, 0)

    def launch(self, stream: Stream) -> None:
        api.call("cudaGraphLaunch", self._exec, stream.handle)

    def close(self) -> None:
        for name, attr in (("cudaGraphExecDestroy", "_exec"), ("cudaGraphDestroy", "_graph")):
            handle = getattr(self, attr, None)
            if handle is not None:
                setattr(self, attr, None)
                try:
                    api.call(name, handle)
                except api.CudaError as exc:
                    log.warning("%s failed: %s", name, exc)
