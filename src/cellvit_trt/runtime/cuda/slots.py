"""The slot ring both GPU backends stream through: pinned host slots, copy/compute streams and events.

Per slot (default 2: one batch computes while the next is copied in and the previous one copied out):

    h2d stream:     H2D(slot input) -> record(h2d_done)
    compute stream: wait(h2d_done) -> the backend's enqueue -> record(compute_done)
    d2h stream:     wait(compute_done) -> D2H(slot outputs) -> record(d2h_done)
    host:           collect(): synchronize(d2h_done) -> copy out of the pinned slot

A slot is handed out again only after its result was collected, i.e. after the host waited for its
`d2h_done`, which follows its compute and its H2D. So nothing queued can still read or write a slot that the
host refills: no "input consumed" event is needed (and TensorRT's, recorded inside a captured enqueue, could
not be waited on from outside the graph: cudaErrorCapturedEvent). On zero-copy (mapped pinned memory, an
integrated GPU) the three streams are one and there are no copies.

Each `Slot` owns its allocations and events and frees them in `close()` (NVIDIA samples/python/
common_runtime.py style: one object per allocation, an explicit lifetime); the ring owns the slots and streams
and drains the streams before freeing anything.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from cellvit_trt.runtime.cuda.memory import DeviceBuffer, PinnedBuffer, copy_d2h, copy_h2d
from cellvit_trt.runtime.cuda.streams import Event, Stream, drain, elapsed_ms

log = logging.getLogger(__name__)

COPY_EVENTS = ("h2d_start", "h2d_done", "compute_start", "compute_done", "d2h_done")
OutSpec = dict[str, tuple[tuple[int, ...], np.dtype]]


class Slot:
    """One batch in flight: pinned input/outputs, their device buffers (optional) and the timing events.

    `dev_in`/`dev_out` are device pointers: the mapped aliases of the pinned buffers on zero-copy, buffers
    owned here when `device_buffers`, else 0 (the backend brings its own, e.g. PyTorch tensors). `keep`
    holds whatever queued work still uses (PyTorch output tensors) until the result is collected.
    """

    def __init__(
        self, index: int, in_shape: tuple[int, ...], out_spec: OutSpec, *, mapped: bool, device_buffers: bool
    ) -> None:
        self.index = index
        self.busy: tuple[int, int] | None = None  # (handle, real tiles)
        self.keep: list[Any] = []
        self.events: dict[str, Event] = {}
        self.host_out: dict[str, PinnedBuffer] = {}
        self.dev_out: dict[str, int] = {}
        self._owned: list[PinnedBuffer | DeviceBuffer] = []
        try:
            self.host_in = self._own(PinnedBuffer(in_shape, np.uint8, mapped=mapped))
            self.dev_in = self._device_side(self.host_in, mapped, device_buffers)
            for name, (shape, dtype) in out_spec.items():
                self.host_out[name] = self._own(PinnedBuffer(shape, dtype, mapped=mapped))
                self.dev_out[name] = self._device_side(self.host_out[name], mapped, device_buffers)
            for k in COPY_EVENTS:
                self.events[k] = Event(timing=True)
        except BaseException:
            self.close()
            raise

    def _own(self, buf):
        self._owned.append(buf)
        return buf

    def _device_side(self, host: PinnedBuffer, mapped: bool, device_buffers: bool) -> int:
        if mapped:
            return host.device_ptr
        return self._own(DeviceBuffer(host.nbytes)).ptr if device_buffers else 0

    def close(self) -> None:
        """Free everything; the streams that used it must have been drained (SlotRing.close does)."""
        self.keep.clear()
        for e in self.events.values():
            e.close()
        for b in self._owned:
            b.close()
        self.events, self._owned, self.busy = {}, [], None


class SlotRing:
    """`n_slots` slots plus the h2d/compute/d2h streams, used in a fixed order per batch:

        slot = ring.acquire()                       # refill slot.host_in
        ring.upload(slot, nbytes)                   # H2D (nothing on zero-copy)
        ring.start_compute(slot); <enqueue on ring.compute>
        handle = ring.download(slot, sources, n)    # D2H of {name: (device ptr, bytes)}
        ...
        slot = ring.collect(handle)                 # waits for this slot only; read slot.host_out
        outputs, timings = ring.release(slot)
    """

    def __init__(
        self,
        n_slots: int,
        in_shape: tuple[int, ...],
        out_spec: OutSpec,
        *,
        zero_copy: bool = False,
        device_buffers: bool = True,
        name: str = "GPU backend",
    ) -> None:
        self.name = name
        self.zero_copy = zero_copy
        self.slots: list[Slot] = []
        self.origin: Event | None = None
        self.timeline: list[dict[str, float]] | None = None  # set to [] to record event times (ms)
        self._next = self._seq = 0
        self.compute = self.h2d = self.d2h = None
        try:
            self.compute = Stream()
            self.h2d = self.compute if zero_copy else Stream()
            self.d2h = self.compute if zero_copy else Stream()
            for i in range(max(1, int(n_slots))):
                self.slots.append(
                    Slot(i, in_shape, out_spec, mapped=zero_copy, device_buffers=device_buffers)
                )
            self.origin = Event(timing=True)
            self.origin.record(self.compute)
        except BaseException:
            self.close()
            raise

    # ---- one batch -----------------------------------------------------------------------------------------
    def acquire(self) -> Slot:
        slot = self.slots[self._next % len(self.slots)]
        if slot.busy is not None:
            raise RuntimeError(
                f"{self.name}: {len(self.slots)} batches already in flight; collect a result first"
            )
        self._next += 1
        return slot

    def upload(self, slot: Slot, nbytes: int, dst: int | None = None) -> None:
        """H2D of the first `nbytes` of the slot's input into `dst` (default its device input); the compute
        stream waits for it."""
        if self.zero_copy:
            return
        ev = slot.events
        ev["h2d_start"].record(self.h2d)
        copy_h2d(slot.dev_in if dst is None else dst, slot.host_in, nbytes, int(self.h2d))
        ev["h2d_done"].record(self.h2d)
        self.compute.wait(ev["h2d_done"])

    def start_compute(self, slot: Slot) -> None:
        slot.events["compute_start"].record(self.compute)

    def download(self, slot: Slot, sources: dict[str, tuple[int, int]], n: int) -> int:
        """D2H of each output `name: (device pointer, bytes)` after the compute; returns the handle."""
        ev = slot.events
        ev["compute_done"].record(self.compute)
        if not self.zero_copy:
            self.d2h.wait(ev["compute_done"])
            for name, (ptr, nbytes) in sources.items():
                copy_d2h(slot.host_out[name], ptr, nbytes, int(self.d2h))
        ev["d2h_done"].record(self.d2h)
        self._seq += 1
        slot.busy = (self._seq, n)
        return self._seq

    def collect(self, handle: int) -> Slot:
        """The slot of `handle` once its outputs are in host memory; handles are collected in order."""
        busy = [s for s in self.slots if s.busy]
        slot = next((s for s in busy if s.busy[0] == handle), None)
        if slot is None or handle != min(s.busy[0] for s in busy):
            raise RuntimeError(
                f"{self.name}: results must be collected once, in submission order (handle {handle})"
            )
        slot.events["d2h_done"].synchronize()
        return slot

    def release(self, slot: Slot) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """Copies of the slot's real tiles, the phase times (seconds, from the events); the slot is free."""
        n = slot.busy[1]
        out = {name: buf.array[:n].copy() for name, buf in slot.host_out.items()}
        ev = slot.events
        timings = {"compute": elapsed_ms(ev["compute_start"], ev["compute_done"]) / 1e3}
        keys: tuple[str, ...] = ("compute_start", "compute_done")
        if not self.zero_copy:
            timings["h2d"] = elapsed_ms(ev["h2d_start"], ev["h2d_done"]) / 1e3
            timings["d2h"] = elapsed_ms(ev["compute_done"], ev["d2h_done"]) / 1e3
            keys = COPY_EVENTS
        if self.timeline is not None:
            self.timeline.append({k: elapsed_ms(self.origin, ev[k]) for k in keys})
        slot.keep, slot.busy = [], None
        return out, timings

    # ---- lifetime ------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Drain the streams (queued work may still use the memory), then free slots, events, streams."""
        drain((self.h2d, self.compute, self.d2h))
        if self.origin is not None:
            self.origin.close()
            self.origin = None
        for s in self.slots:
            s.close()
        self.slots = []
        for name in ("h2d", "compute", "d2h"):
            stream = getattr(self, name)
            if stream is not None:
                stream.close()
                setattr(self, name, None)
