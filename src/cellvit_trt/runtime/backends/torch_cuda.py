"""PyTorch as the compute inside the cuda-python streaming layer (GPU machines without TensorRT).

Same slot discipline as the TensorRT backend — pinned host ring, H2D / compute / D2H on three streams ordered
by
events, two batches in flight — with the model enqueued by PyTorch on the compute stream
(`torch.cuda.ExternalStream` over the cuda-python stream handle). This keeps `benchmarks/gpu_check.py` able to
measure copy/compute overlap where TensorRT is not installed.

Output tensors are allocated by PyTorch's caching allocator on the compute stream; each slot keeps them alive
until its D2H has completed (`result()`), so the allocator cannot hand their memory to the next batch early.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cellvit_trt.runtime.backends.base import normalise_outputs
from cellvit_trt.runtime.backends.torch import TorchBackend
from cellvit_trt.runtime.cuda.device import probe_device
from cellvit_trt.runtime.cuda.memory import PinnedBuffer, copy_d2h, copy_h2d
from cellvit_trt.runtime.cuda.streams import Event, Stream, drain, elapsed_ms


@dataclass
class _Slot:
    host_in: PinnedBuffer
    dev_in: Any  # torch uint8 tensor [max_batch, T, T, 3] on the GPU
    host_out: dict[str, PinnedBuffer]
    events: dict[str, Event]
    alive: list[Any] = field(default_factory=list)  # output tensors referenced until their D2H is done
    busy: tuple[int, int] | None = None


class TorchCudaBackend(TorchBackend):
    kind = "torch-cuda"

    def __init__(self, checkpoint, device: int = 0, precision: str = "fp16", slots: int = 2, **kw):
        super().__init__(checkpoint, device=f"cuda:{device}", precision=precision, **kw)
        self.device_index = device
        self.n_slots = max(1, int(slots))
        self.max_in_flight = self.n_slots

    def _activate(self) -> None:
        self.device = probe_device(self.device_index)  # DeviceError with a clear reason before torch.cuda
        super()._activate()
        torch = self._torch
        self.h2d, self.compute, self.d2h = Stream(), Stream(), Stream()
        self._tstream = torch.cuda.ExternalStream(int(self.compute), device=self._device)
        t = self.tile_size
        # Output shapes per tile from one warm-up batch (also initialises cuDNN/cuBLAS before timing starts).
        warm = torch.full((1, t, t, 3), 255, dtype=torch.uint8, device=self._device)
        # Weights and `warm` were written on PyTorch's default stream; our non-blocking streams do not
        # order themselves after it.
        torch.cuda.synchronize(self._device)
        with torch.cuda.stream(self._tstream):
            outs = self._forward(warm)
        torch.cuda.synchronize(self._device)
        self._out_spec = {
            n: ((self.max_batch, *o.shape[1:]), np.dtype(str(o.dtype).replace("torch.", "")))
            for n, o in zip(self.output_names, outs, strict=True)
        }
        self.slots = []
        for _ in range(self.n_slots):
            events = {
                k: Event(timing=True)
                for k in ("h2d_start", "h2d_done", "compute_start", "compute_done", "d2h_done")
            }
            self.slots.append(
                _Slot(
                    host_in=PinnedBuffer((self.max_batch, t, t, 3), np.uint8),
                    dev_in=torch.empty((self.max_batch, t, t, 3), dtype=torch.uint8, device=self._device),
                    host_out={n: PinnedBuffer(shape, dt) for n, (shape, dt) in self._out_spec.items()},
                    events=events,
                )
            )
        torch.cuda.synchronize(self._device)
        self._next = 0
        self._origin = Event(timing=True)
        self._origin.record(self.compute)
        self.timeline: list[dict[str, float]] | None = None  # set to [] to record event times (ms)

    def _deactivate(self) -> None:
        drain(
            getattr(self, name, None) for name in ("h2d", "compute", "d2h")
        )  # nothing may still use the memory
        if getattr(self, "_origin", None) is not None:
            self._origin.close()
            self._origin = None
        for s in getattr(self, "slots", []):
            for e in s.events.values():
                e.close()
            for b in [s.host_in, *s.host_out.values()]:
                b.close()
            s.alive.clear()
        self.slots = []
        for name in ("h2d", "compute", "d2h"):
            st = getattr(self, name, None)
            if st is not None:
                st.close()
                setattr(self, name, None)
        super()._deactivate()

    def _submit(self, images: np.ndarray) -> int:
        torch = self._torch
        s = self.slots[self._next % self.n_slots]
        if s.busy is not None:
            raise RuntimeError(
                f"{self.name}: {self.n_slots} batches already in flight; collect a result first"
            )
        self._next += 1
        n = images.shape[0]
        s.host_in.array[:n] = images
        ev = s.events
        ev["h2d_start"].record(self.h2d)
        copy_h2d(s.dev_in.data_ptr(), s.host_in, images.nbytes, int(self.h2d))
        ev["h2d_done"].record(self.h2d)
        self.compute.wait(ev["h2d_done"])
        ev["compute_start"].record(self.compute)
        with torch.cuda.stream(self._tstream):
            outs = [o.contiguous() for o in self._forward(s.dev_in[:n])]
        ev["compute_done"].record(self.compute)
        self.d2h.wait(ev["compute_done"])
        for name, o in zip(self.output_names, outs, strict=True):
            copy_d2h(s.host_out[name], o.data_ptr(), o.numel() * o.element_size(), int(self.d2h))
        ev["d2h_done"].record(self.d2h)
        s.alive = outs
        self._seq += 1
        s.busy = (self._seq, n)
        return self._seq

    def _result(self, handle: int) -> dict[str, np.ndarray]:
        s = next((x for x in self.slots if x.busy and x.busy[0] == handle), None)
        if s is None or handle != min(x.busy[0] for x in self.slots if x.busy):
            raise RuntimeError(f"{self.name}: results must be collected once, in submission order ({handle})")
        ev = s.events
        ev["d2h_done"].synchronize()
        n = s.busy[1]
        out = {name: buf.array[:n].copy() for name, buf in s.host_out.items()}
        s.alive, s.busy = [], None
        self.last_timings = {
            "h2d": elapsed_ms(ev["h2d_start"], ev["h2d_done"]) / 1e3,
            "compute": elapsed_ms(ev["compute_start"], ev["compute_done"]) / 1e3,
            "d2h": elapsed_ms(ev["compute_done"], ev["d2h_done"]) / 1e3,
        }
        if self.timeline is not None:
            self.timeline.append({k: elapsed_ms(self._origin, e) for k, e in ev.items()})
        return normalise_outputs(out, self.name)
