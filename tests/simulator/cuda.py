"""The CUDA runtime, as cuda-python's `cuda.bindings.runtime` shows it, simulated for ordering bugs.

Surface: functions return `(cudaError_t, *values)` tuples like cuda-bindings 12.9-13.x (NVIDIA/cuda-python
docs, "cuda.bindings.runtime"); handles are ints. What is modelled, and the rule each part follows:

Streams and events (CUDA Runtime API, "Stream Management" / "Event Management"):
- Work issued to a stream is queued and runs *later*; nothing runs at the call. When it runs is decided by a
  schedule (`SCHEDULES`): `lazy` runs only what a host synchronisation needs (a producer on another stream
  runs as late as possible, so a missing `cudaStreamWaitEvent` reads stale or unwritten memory); `eager` runs
  everything as soon as it can; `copies-first` / `kernels-first` run one kind early and hold the other back;
  `random-N` runs random ready work after every call. Streams must be non-blocking (`cudaStreamNonBlocking`):
  the legacy default stream's implicit synchronisation is not modelled and no stream orders itself after it.
- `cudaEventRecord` captures the stream's work so far; `cudaStreamWaitEvent` waits for the *latest* record at
  the time of the call (a never-recorded event: no wait); `cudaEventQuery` gives `cudaErrorNotReady` until
  it completes; `cudaEventSynchronize` / `cudaStreamSynchronize` block the host, i.e. run what they need.
- `cudaEventElapsedTime` needs two completed records of timing events (`cudaErrorInvalidResourceHandle` for
  an event created with `cudaEventDisableTiming` or never recorded, `cudaErrorNotReady` when pending).

Stream capture and graphs (CUDA Programming Guide, "CUDA Graphs: Prohibited and Unhandled Operations";
cudaError_t docs):
- Work issued to a capturing stream is recorded into the graph, not run. Synchronising or querying a
  capturing stream, synchronising the device, allocating or freeing memory, or a pageable copy during a
  capture is `cudaErrorStreamCaptureUnsupported` and invalidates the capture; waiting on a non-captured
  event from a capturing stream is `cudaErrorStreamCaptureIsolation`.
- An event last recorded in a capturing stream cannot be waited on, queried or synchronised from outside:
  `cudaErrorCapturedEvent` (it stays so after graph launches: captured records become graph edges).
- `cudaStreamEndCapture` of an invalidated capture returns `cudaErrorStreamCaptureInvalidated` and no graph.
- A launched graph replays the captured work with the arguments (addresses, shapes) it was captured with.
- A failing call sets the thread's last error (not `cudaErrorNotReady`); `cudaGetLastError` returns and
  clears it. Libraries that check it (TensorRT does, see tensorrt.py) fail on a stale one: hence trtexec's
  "Clean up any CUDA error" after a failed capture (samples/common/sampleDevice.h, endCaptureOnError).

Memory (CUDA Runtime API, "Memory Management"; CUDA for Tegra, "I/O Coherency"):
- Device memory (`cudaMalloc`) is a store of its own at addresses the host cannot use; pinned memory
  (`cudaMallocHost`, `cudaHostAlloc`) is real host memory; mapped pinned memory (`cudaHostAllocMapped`) has a
  device alias from `cudaHostGetDevicePointer` (a distinct number here, so mixing the two is caught). Any
  other host address is pageable: an H2D copy from it is staged at the call, a D2H copy into it completes
  before the call returns, and neither can be captured.
- `cudaMemcpyAsync` moves bytes only when its stream runs. The kind must match the address spaces.
- Hazards raise `Hazard` (a test failure, not a CUDA error: real CUDA would corrupt silently): reading
  device memory never written, using freed memory, kernels given host-only memory, and freeing memory that
  queued work still uses (`cudaFree`'s implicit synchronisation is not documented API, so it is not granted).
"""

from __future__ import annotations

import bisect
import ctypes
import enum
import itertools
import random
import types
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SCHEDULES = ("lazy", "eager", "copies-first", "kernels-first", "random-1", "random-2")
DEVICE_BASE = 0xD000_0000_0000_0000  # never a host address: the host cannot dereference device pointers
MAPPED_BASE = 0xE000_0000_0000_0000
ALIGN = 512


class Hazard(AssertionError):
    """Undefined behaviour a real GPU would not report (races, use-after-free, uninitialised reads)."""


class Err(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2
    cudaErrorInsufficientDriver = 35
    cudaErrorNoDevice = 100
    cudaErrorInvalidResourceHandle = 400
    cudaErrorIllegalState = 401
    cudaErrorNotReady = 600
    cudaErrorStreamCaptureUnsupported = 900
    cudaErrorStreamCaptureInvalidated = 901
    cudaErrorStreamCaptureIsolation = 905
    cudaErrorCapturedEvent = 907


@dataclass(eq=False)
class Alloc:
    kind: str  # "device", "pinned", "mapped"
    base: int  # device address (device) or host address (pinned, mapped)
    size: int
    data: np.ndarray  # the bytes (for host kinds: a view of the real host memory)
    init: np.ndarray | None = None  # device only: which bytes were ever written
    alias: int = 0  # mapped: the device-side address
    freed: bool = False


@dataclass(eq=False)
class Op:
    stream: Stream
    kind: str  # copy, kernel, record, wait, graph, fill, host
    label: str
    run: Callable[[], None] = lambda: None
    uses: list[Alloc] = field(default_factory=list)
    waits_for: Op | None = None  # wait: the record op it waits for
    done: bool = False
    time: float = 0.0


@dataclass(eq=False)
class Capture:
    ops: list[Op] = field(default_factory=list)
    invalid: Err | None = None


@dataclass(eq=False)
class Stream:
    handle: int
    queue: deque = field(default_factory=deque)
    capture: Capture | None = None
    destroyed: bool = False


@dataclass(eq=False)
class Event:
    handle: int
    timing: bool
    last: Op | None = None  # the latest record
    captured: bool = False  # last recorded in a capturing stream
    destroyed: bool = False


@dataclass(eq=False)
class GraphObj:
    ops: list[Op]
    destroyed: bool = False


class CudaSim:
    """One simulated GPU behind the `cuda.bindings.runtime` surface (see the module docstring)."""

    cudaError_t = Err
    cudaStreamDefault = 0
    cudaStreamNonBlocking = 1
    cudaEventDefault = 0
    cudaEventDisableTiming = 2
    cudaHostAllocDefault = 0
    cudaHostAllocMapped = 2
    cudaMemcpyKind = types.SimpleNamespace(
        cudaMemcpyHostToHost=0, cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2, cudaMemcpyDeviceToDevice=3
    )
    cudaStreamCaptureMode = types.SimpleNamespace(
        cudaStreamCaptureModeGlobal=0, cudaStreamCaptureModeThreadLocal=1, cudaStreamCaptureModeRelaxed=2
    )

    def __init__(
        self,
        schedule: str = "lazy",
        *,
        devices: int = 1,
        integrated: bool = False,
        name: str = "Simulated GPU",
        sm: tuple[int, int] = (8, 9),
        sm_count: int = 64,
        driver: int = 12080,
        runtime: int = 12080,
    ) -> None:
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule {schedule!r}: expected one of {SCHEDULES}")
        self.schedule = schedule
        self._rng = random.Random(int(schedule.split("-")[1]) if schedule.startswith("random") else 0)
        self.devices, self.integrated = devices, integrated
        self.props = types.SimpleNamespace(
            name=name.encode() + b"\0\0",
            major=sm[0],
            minor=sm[1],
            multiProcessorCount=sm_count,
            integrated=int(integrated),
            totalGlobalMem=16 << 30,
        )
        self.driver, self.runtime = driver, runtime
        self.calls: list[str] = []  # every API call by name, in order
        self.last_error = Err.cudaSuccess
        self.clock = 0.0
        self.pageable_copies = 0
        self.faults: dict[str, Any] = {}  # failures a test injects into the library simulators
        self.late_hazards: list[
            str
        ] = []  # found where raising is impossible (__del__); failed by the harness
        self._handles = itertools.count(1)
        self._dev_next = DEVICE_BASE
        self._map_next = MAPPED_BASE
        self._allocs: dict[int, Alloc] = {}  # by base (host or device) and by mapped alias
        self._sorted: list[tuple[int, int, Alloc]] = []  # (start, end, alloc), all address spaces
        self._keep: list[np.ndarray] = []  # freed host memory stays allocated (poisoned): no real crash
        self.streams: dict[int, Stream] = {0: Stream(0)}  # 0: the legacy default stream (PyTorch's)
        self.events: dict[int, Event] = {}
        self.graphs: dict[int, GraphObj] = {}
        self.execs: dict[int, GraphObj] = {}

    # ---- plumbing ------------------------------------------------------------------------------------------
    def _ret(self, err: Err, *values: Any) -> tuple:
        if err not in (Err.cudaSuccess, Err.cudaErrorNotReady):
            self.last_error = err
        return (err, *values)

    def _api(self, name: str) -> None:
        self.calls.append(name)

    def _after(self) -> None:
        """What the GPU does on its own between two host calls, per the schedule."""
        if self.schedule == "lazy":
            return
        if self.schedule == "eager":
            self.run_ready(lambda op: True)
        elif self.schedule == "copies-first":
            self.run_ready(lambda op: op.kind != "kernel" and op.kind != "graph")
        elif self.schedule == "kernels-first":
            self.run_ready(lambda op: op.kind != "copy")
        else:
            streams = list(self.streams.values())
            self._rng.shuffle(streams)
            for s in streams[: self._rng.randint(0, len(streams))]:
                for _ in range(self._rng.randint(0, 3)):
                    if not self._step(s, lambda op: True):
                        break

    def capturing_any(self) -> Stream | None:
        return next((s for s in self.streams.values() if s.capture is not None), None)

    def _unsafe_during_capture(self) -> Err | None:
        """`cudaStreamCaptureModeThreadLocal`: potentially unsafe calls by the capturing thread fail."""
        s = self.capturing_any()
        if s is None:
            return None
        s.capture.invalid = s.capture.invalid or Err.cudaErrorStreamCaptureUnsupported
        return Err.cudaErrorStreamCaptureUnsupported

    def invalidate_capture(self, handle: int, err: Err) -> None:
        """Used by library simulators (TensorRT) doing something not capturable on a capturing stream."""
        s = self.streams[int(handle)]
        if s.capture is not None:
            s.capture.invalid = s.capture.invalid or err
        self.last_error = err

    # ---- running work --------------------------------------------------------------------------------------
    def _ready(self, op: Op) -> bool:
        return op.kind != "wait" or op.waits_for is None or op.waits_for.done

    def _execute(self, op: Op) -> None:
        for a in op.uses:
            if a.freed:
                raise Hazard(
                    f"use after free: {op.label} on stream {op.stream.handle} uses freed {a.kind} memory"
                )
        op.run()
        self.clock += 1.0
        op.time = self.clock
        op.done = True

    def _step(self, s: Stream, allow: Callable[[Op], bool]) -> bool:
        if not s.queue or not self._ready(s.queue[0]) or not allow(s.queue[0]):
            return False
        self._execute(s.queue.popleft())
        return True

    def run_ready(self, allow: Callable[[Op], bool]) -> None:
        progress = True
        while progress:
            progress = False
            for s in list(self.streams.values()):
                while self._step(s, allow):
                    progress = True

    def _complete(self, target: Op, depth: int = 0) -> None:
        """Run exactly what `target` needs: its stream up to it, and producers it waits on, recursively."""
        if depth > 64:
            raise Hazard("deadlock: streams wait on each other in a cycle")
        s = target.stream
        while not target.done:
            if not s.queue:
                raise Hazard(f"{target.label} can never run (not queued)")
            head = s.queue[0]
            if head.kind == "wait" and head.waits_for is not None and not head.waits_for.done:
                self._complete(head.waits_for, depth + 1)
            self._execute(s.queue.popleft())

    def _drain(self, s: Stream) -> None:
        while s.queue:
            self._complete(s.queue[-1])

    def _enqueue(self, s: Stream, op: Op) -> None:
        if s.capture is not None:
            s.capture.ops.append(op)
        else:
            s.queue.append(op)

    # ---- memory --------------------------------------------------------------------------------------------
    def _register(self, start: int, a: Alloc) -> None:
        self._allocs[start] = a
        bisect.insort(self._sorted, (start, start + a.size, id(a), a))

    def _find(self, ptr: int, nbytes: int = 1) -> Alloc | None:
        i = bisect.bisect_right(self._sorted, (ptr, float("inf"), float("inf"))) - 1
        if i >= 0:
            start, end, _, a = self._sorted[i]
            if start <= ptr and ptr + nbytes <= end:
                return a
        return None

    def _host_alloc(self, n: int, kind: str) -> Alloc:
        buf = np.zeros(int(n) + ALIGN, np.uint8)
        off = (-buf.ctypes.data) % ALIGN
        data = buf[off : off + int(n)]
        self._keep.append(buf)
        a = Alloc(kind, int(data.ctypes.data), int(n), data)
        self._register(a.base, a)
        return a

    def device_region(self, ptr: int, nbytes: int, what: str) -> tuple[Alloc, np.ndarray, slice]:
        """(allocation, byte store, slice) for device-side access; kernels may not touch host-only memory."""
        a = self._find(int(ptr), nbytes)
        if a is None:
            raise Hazard(
                f"{what}: {nbytes} bytes at {int(ptr):#x} are not in any allocation (illegal address)"
            )
        if a.kind == "pinned" or (a.kind == "mapped" and int(ptr) < MAPPED_BASE):
            raise Hazard(
                f"{what}: device code given host address {int(ptr):#x} (use the mapped device pointer)"
            )
        start = int(ptr) - (a.alias if a.kind == "mapped" else a.base)
        return a, a.data, slice(start, start + nbytes)

    def read_device(self, ptr: int, nbytes: int, what: str) -> np.ndarray:
        a, data, sl = self.device_region(ptr, nbytes, what)
        if a.freed:
            raise Hazard(f"{what}: reads freed {a.kind} memory at {int(ptr):#x}")
        if a.init is not None and not a.init[sl].all():
            raise Hazard(f"{what}: reads device memory at {int(ptr):#x} that was never written")
        return data[sl].copy()

    def write_device(self, ptr: int, payload: np.ndarray, what: str) -> None:
        raw = np.ascontiguousarray(payload).view(np.uint8).reshape(-1)
        a, data, sl = self.device_region(ptr, raw.size, what)
        if a.freed:
            raise Hazard(f"{what}: writes freed {a.kind} memory at {int(ptr):#x}")
        data[sl] = raw
        if a.init is not None:
            a.init[sl] = True

    def uses(self, *regions: tuple[int, int]) -> list[Alloc]:
        out = []
        for ptr, n in regions:
            a = self._find(int(ptr), max(int(n), 1))
            if a is not None:
                out.append(a)
        return out

    def _free(self, ptr: int, kinds: tuple[str, ...], call: str) -> tuple:
        a = self._allocs.get(int(ptr))
        if a is None or a.kind not in kinds or a.base != int(ptr) or a.freed:
            return self._ret(Err.cudaErrorInvalidValue)
        err = self._unsafe_during_capture()
        if err is not None:
            return self._ret(err)
        for s in self.streams.values():
            for op in s.queue:
                if a in op.uses:
                    raise Hazard(
                        f"{call} of {a.kind} memory that queued work still uses "
                        f"({op.label} on stream {s.handle})"
                    )
        a.freed = True
        if a.kind != "device":
            a.data[:] = 0xCD  # poison: a stale host view reads garbage, as after a real free
        return self._ret(Err.cudaSuccess)

    # ---- API: device ---------------------------------------------------------------------------------------
    def cudaGetErrorName(self, err):
        return Err.cudaSuccess, Err(int(err)).name.encode()

    def cudaGetLastError(self):
        self._api("cudaGetLastError")
        err, self.last_error = self.last_error, Err.cudaSuccess
        return (err,)

    def cudaPeekAtLastError(self):
        return (self.last_error,)

    def _injected(self, name: str) -> Err | None:
        """An error the test injected for API `name` (faults["api_errors"])."""
        err = self.faults.get("api_errors", {}).get(name)
        return None if err is None else Err(err)

    def cudaGetDeviceCount(self):
        self._api("cudaGetDeviceCount")
        if self.devices == 0:
            return self._ret(Err.cudaErrorInsufficientDriver, 0)
        err = self._injected("cudaGetDeviceCount")
        if err is not None:
            return self._ret(err, 0)
        return Err.cudaSuccess, self.devices

    def cudaGetDeviceProperties(self, i):
        return Err.cudaSuccess, self.props

    def cudaSetDevice(self, i):
        self._api("cudaSetDevice")
        return (Err.cudaSuccess,)

    def cudaMemGetInfo(self):
        err = self._injected("cudaMemGetInfo")
        if err is not None:
            return self._ret(err, 0, 0)
        return Err.cudaSuccess, 12 << 30, 16 << 30

    def cudaDriverGetVersion(self):
        return Err.cudaSuccess, self.driver

    def cudaRuntimeGetVersion(self):
        return Err.cudaSuccess, self.runtime

    def cudaDeviceSynchronize(self):
        self._api("cudaDeviceSynchronize")
        err = self._unsafe_during_capture()
        if err is not None:
            return self._ret(err)
        for s in list(self.streams.values()):
            self._drain(s)
        return (Err.cudaSuccess,)

    # ---- API: memory ---------------------------------------------------------------------------------------
    def cudaMalloc(self, n):
        self._api("cudaMalloc")
        err = self._unsafe_during_capture()
        if err is not None:
            return self._ret(err, 0)
        n = int(n)
        a = Alloc("device", self._dev_next, n, np.zeros(n, np.uint8), np.zeros(n, bool))
        self._dev_next += (n + ALIGN - 1) // ALIGN * ALIGN + ALIGN
        self._register(a.base, a)
        return Err.cudaSuccess, a.base

    def cudaFree(self, ptr):
        self._api("cudaFree")
        return self._free(ptr, ("device",), "cudaFree")

    def cudaMallocHost(self, n):
        self._api("cudaMallocHost")
        err = self._unsafe_during_capture()
        if err is not None:
            return self._ret(err, 0)
        return Err.cudaSuccess, self._host_alloc(n, "pinned").base

    def cudaHostAlloc(self, n, flags):
        self._api("cudaHostAlloc")
        err = self._unsafe_during_capture()
        if err is not None:
            return self._ret(err, 0)
        mapped = bool(int(flags) & self.cudaHostAllocMapped)
        a = self._host_alloc(n, "mapped" if mapped else "pinned")
        if mapped:
            a.alias = self._map_next
            self._map_next += (a.size + ALIGN - 1) // ALIGN * ALIGN + ALIGN
            self._register(a.alias, a)
        return Err.cudaSuccess, a.base

    def cudaHostGetDevicePointer(self, ptr, flags):
        a = self._allocs.get(int(ptr))
        if a is None or a.kind != "mapped" or a.freed:
            return self._ret(Err.cudaErrorInvalidValue, 0)
        return Err.cudaSuccess, a.alias

    def cudaFreeHost(self, ptr):
        self._api("cudaFreeHost")
        return self._free(ptr, ("pinned", "mapped"), "cudaFreeHost")

    def cudaMemcpyAsync(self, dst, src, n, kind, stream):
        self._api("cudaMemcpyAsync")
        s = self._stream(stream)
        if s is None:
            return self._ret(Err.cudaErrorInvalidResourceHandle)
        dst, src, n, kind = int(dst), int(src), int(n), int(kind)
        K = self.cudaMemcpyKind
        if kind == K.cudaMemcpyHostToDevice:
            host, dev = src, dst
        elif kind == K.cudaMemcpyDeviceToHost:
            host, dev = dst, src
        else:
            raise Hazard(f"cudaMemcpyAsync kind {kind} is not used by the backends")
        if self._find(dev, n) is None or dev < DEVICE_BASE:
            return self._ret(Err.cudaErrorInvalidValue)  # not a device address: wrong kind or pointer
        ha = self._find(host, n)
        if ha is not None and (host >= DEVICE_BASE):
            return self._ret(Err.cudaErrorInvalidValue)
        pageable = ha is None
        if pageable and s.capture is not None:
            s.capture.invalid = s.capture.invalid or Err.cudaErrorStreamCaptureUnsupported
            return self._ret(Err.cudaErrorStreamCaptureUnsupported)
        label = f"{'H2D' if kind == K.cudaMemcpyHostToDevice else 'D2H'} {n} B"
        if kind == K.cudaMemcpyHostToDevice:
            staged = _host_bytes(host, n).copy() if pageable else None

            def run(host=host, dev=dev, n=n, staged=staged):
                if ha is not None and ha.freed:
                    raise Hazard(f"{label}: source pinned memory was freed")
                self.write_device(dev, staged if staged is not None else _host_bytes(host, n).copy(), label)
        else:

            def run(host=host, dev=dev, n=n):
                if ha is not None and ha.freed:
                    raise Hazard(f"{label}: destination pinned memory was freed")
                _host_bytes(host, n)[:] = self.read_device(dev, n, label)

        op = Op(s, "copy", label, run, self.uses((dev, n)) + ([ha] if ha is not None else []))
        self._enqueue(s, op)
        if pageable:
            self.pageable_copies += 1
            if kind == K.cudaMemcpyDeviceToHost:
                self._complete(op)  # to pageable memory: returns once the copy is done
        self._after()
        return (Err.cudaSuccess,)

    # ---- API: streams --------------------------------------------------------------------------------------
    def _stream(self, handle) -> Stream | None:
        s = self.streams.get(int(handle))
        return None if s is None or s.destroyed else s

    def cudaStreamCreateWithFlags(self, flags):
        self._api("cudaStreamCreateWithFlags")
        if not int(flags) & self.cudaStreamNonBlocking:
            raise Hazard(
                "blocking streams synchronise implicitly with the legacy stream: not modelled, not used"
            )
        h = next(self._handles)
        self.streams[h] = Stream(h)
        return Err.cudaSuccess, h

    def cudaStreamDestroy(self, handle):
        self._api("cudaStreamDestroy")
        s = self._stream(handle)
        if s is None or s.handle == 0:
            return self._ret(Err.cudaErrorInvalidResourceHandle)
        s.destroyed = True  # queued work still completes (CUDA releases the stream afterwards)
        return (Err.cudaSuccess,)

    def cudaStreamSynchronize(self, handle):
        self._api("cudaStreamSynchronize")
        s = self._stream(handle)
        if s is None:
            return self._ret(Err.cudaErrorInvalidResourceHandle)
        if s.capture is not None:
            s.capture.invalid = s.capture.invalid or Err.cudaErrorStreamCaptureUnsupported
            return self._ret(Err.cudaErrorStreamCaptureUnsupported)
        self._drain(s)
        return (Err.cudaSuccess,)

    def cudaStreamWaitEvent(self, handle, event, flags=0):
        self._api("cudaStreamWaitEvent")
        s, e = self._stream(handle), self._event(event)
        if s is None or e is None:
            return self._ret(Err.cudaErrorInvalidResourceHandle)
        if e.captured and s.capture is None:
            return self._ret(Err.cudaErrorCapturedEvent)
        if s.capture is not None and not e.captured and e.last is not None:
            s.capture.invalid = s.capture.invalid or Err.cudaErrorStreamCaptureIsolation
            return self._ret(Err.cudaErrorStreamCaptureIsolation)
        self._enqueue(s, Op(s, "wait", f"wait for event {e.handle}", waits_for=e.last))
        self._after()
        return (Err.cudaSuccess,)

    def cudaStreamBeginCapture(self, handle, mode):
        self._api("cudaStreamBeginCapture")
        s = self._stream(handle)
        if s is None or s.handle == 0:
            return self._ret(Err.cudaErrorStreamCaptureUnsupported)
        if s.capture is not None:
            return self._ret(Err.cudaErrorIllegalState)
        s.capture = Capture()
        return (Err.cudaSuccess,)

    def cudaStreamEndCapture(self, handle):
        self._api("cudaStreamEndCapture")
        s = self._stream(handle)
        if s is None or s.capture is None:
            return self._ret(Err.cudaErrorIllegalState, None)
        cap, s.capture = s.capture, None
        if cap.invalid is not None:
            return self._ret(Err.cudaErrorStreamCaptureInvalidated, None)
        h = next(self._handles)
        self.graphs[h] = GraphObj(cap.ops)
        return Err.cudaSuccess, h

    # ---- API: events ---------------------------------------------------------------------------------------
    def _event(self, handle) -> Event | None:
        e = self.events.get(int(handle))
        return None if e is None or e.destroyed else e

    def cudaEventCreateWithFlags(self, flags):
        self._api("cudaEventCreateWithFlags")
        h = next(self._handles)
        self.events[h] = Event(h, timing=not int(flags) & self.cudaEventDisableTiming)
        return Err.cudaSuccess, h

    def cudaEventDestroy(self, handle):
        self._api("cudaEventDestroy")
        e = self._event(handle)
        if e is None:
            return self._ret(Err.cudaErrorInvalidResourceHandle)
        e.destroyed = True
        return (Err.cudaSuccess,)

    def record(self, e: Event, s: Stream) -> None:
        op = Op(s, "record", f"record event {e.handle}")
        self._enqueue(s, op)
        e.last, e.captured = (None, True) if s.capture is not None else (op, False)

    def cudaEventRecord(self, event, handle):
        self._api("cudaEventRecord")
        e, s = self._event(event), self._stream(handle)
        if e is None or s is None:
            return self._ret(Err.cudaErrorInvalidResourceHandle)
        if s.capture is not None and s.capture.invalid is not None:
            return self._ret(Err.cudaErrorStreamCaptureInvalidated)
        self.record(e, s)
        self._after()
        return (Err.cudaSuccess,)

    def cudaEventQuery(self, event):
        self._api("cudaEventQuery")
        e = self._event(event)
        if e is None:
            return self._ret(Err.cudaErrorInvalidResourceHandle)
        if e.captured:
            return self._ret(Err.cudaErrorCapturedEvent)
        return (Err.cudaSuccess,) if e.last is None or e.last.done else (Err.cudaErrorNotReady,)

    def cudaEventSynchronize(self, event):
        self._api("cudaEventSynchronize")
        e = self._event(event)
        if e is None:
            return self._ret(Err.cudaErrorInvalidResourceHandle)
        if e.captured:
            return self._ret(Err.cudaErrorCapturedEvent)
        if e.last is not None:
            self._complete(e.last)
        return (Err.cudaSuccess,)

    def cudaEventElapsedTime(self, start, end):
        a, b = self._event(start), self._event(end)
        if a is None or b is None or not (a.timing and b.timing) or a.last is None or b.last is None:
            return self._ret(Err.cudaErrorInvalidResourceHandle, 0.0)
        if a.captured or b.captured:
            return self._ret(Err.cudaErrorCapturedEvent, 0.0)
        if not (a.last.done and b.last.done):
            return Err.cudaErrorNotReady, 0.0
        return Err.cudaSuccess, float(b.last.time - a.last.time)

    # ---- API: graphs ---------------------------------------------------------------------------------------
    def cudaGraphInstantiate(self, graph, flags=0):
        self._api("cudaGraphInstantiate")
        g = self.graphs.get(int(graph))
        if g is None or g.destroyed:
            return self._ret(Err.cudaErrorInvalidResourceHandle, None)
        h = next(self._handles)
        self.execs[h] = GraphObj(list(g.ops))
        return Err.cudaSuccess, h

    def cudaGraphLaunch(self, exec_, handle):
        self._api("cudaGraphLaunch")
        g, s = self.execs.get(int(exec_)), self._stream(handle)
        if g is None or g.destroyed or s is None:
            return self._ret(Err.cudaErrorInvalidResourceHandle)
        if s.capture is not None:
            raise Hazard("graph launched into a capture: not used by the backends")
        captured = [op for op in g.ops if op.kind not in ("record", "wait")]

        def replay():
            for op in captured:
                self._execute(Op(s, op.kind, f"graph:{op.label}", op.run, op.uses))

        uses = [a for op in captured for a in op.uses]
        self._enqueue(s, Op(s, "graph", f"graph {exec_}", replay, uses))
        self._after()
        return (Err.cudaSuccess,)

    def _destroy_graph(self, table: dict[int, GraphObj], handle) -> tuple:
        g = table.get(int(handle))
        if g is None or g.destroyed:
            return self._ret(Err.cudaErrorInvalidResourceHandle)
        g.destroyed = True
        return (Err.cudaSuccess,)

    def cudaGraphExecDestroy(self, exec_):
        return self._destroy_graph(self.execs, exec_)

    def cudaGraphDestroy(self, graph):
        return self._destroy_graph(self.graphs, graph)

    # ---- for library simulators (TensorRT, PyTorch) ---------------------------------------------------
    def launch(
        self, handle: int, label: str, fn: Callable[[], None], uses: list[Alloc], kind: str = "kernel"
    ):
        """Queue (or capture) device work `fn` on stream `handle`; `uses` are the allocations it touches."""
        s = self._stream(handle)
        if s is None:
            raise Hazard(f"{label}: launched on a destroyed or unknown stream {handle}")
        self._enqueue(s, Op(s, kind, label, fn, uses))
        self._after()

    def pending_ops(self) -> int:
        return sum(len(s.queue) for s in self.streams.values())


def _host_bytes(ptr: int, n: int) -> np.ndarray:
    return np.frombuffer((ctypes.c_uint8 * n).from_address(ptr), np.uint8)
