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
        res = rt.cudaEventQuery(self.handle)
        err = res[0] if isinstance(res, tuple) else res
        if int(err) == int(rt.cudaError_t.cudaErrorNotReady):
            return False
        if int(err) != 0:
            api.call("cudaEventQuery", self.handle)  # raises the CudaError with its name
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

    The caller captures only after a warm-up enqueue with the final shapes and addresses has *completed*
    (trtexec, samples/common/sampleInference.cpp: enqueue, `stream.synchronize()`, then capture). The capture
    is thread-local, so other threads' CUDA calls are not swept into it. When the enqueue fails or the capture
    is invalidated, the capture is ended, the half-made graph destroyed and CUDA's last error cleared
    (trtexec's `endCaptureOnError`), and the *enqueue's* error is raised, not EndCapture's.
    """

    def __init__(self, stream: Stream, enqueue) -> None:
        rt = api.cudart()
        api.call(
            "cudaStreamBeginCapture", stream.handle, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        )
        try:
            enqueue()
        except BaseException:
            _abandon_capture(stream)
            raise
        try:
            graph = api.call("cudaStreamEndCapture", stream.handle)
        except api.CudaError:
            api.cudart().cudaGetLastError()  # the invalidation is reported here; leave no stale error behind
            raise
        self._graph = graph
        try:
            self._exec = api.call("cudaGraphInstantiate", graph, 0)
        except BaseException:
            self.close()
            api.cudart().cudaGetLastError()
            raise

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


def _abandon_capture(stream: Stream) -> None:
    """End a failed capture without masking the error that failed it (trtexec's endCaptureOnError)."""
    rt = api.cudart()
    res = rt.cudaStreamEndCapture(stream.handle)
    err, graph = (res[0], res[1] if len(res) > 1 else None) if isinstance(res, tuple) else (res, None)
    if int(err) == 0 and graph:
        try:
            api.call("cudaGraphDestroy", graph)
        except api.CudaError as exc:
            log.warning("destroying an abandoned CUDA graph failed: %s", exc)
    rt.cudaGetLastError()  # an invalidated capture leaves its error behind for the next library that checks
