"""PyTorch as the compute inside the cuda-python streaming layer (GPU machines without TensorRT).

The same slot ring as the TensorRT backend (`runtime/cuda/slots.py`): pinned host slots, H2D / compute / D2H
on three streams ordered by events, two batches in flight; the model is enqueued by PyTorch on the ring's
compute stream (`torch.cuda.ExternalStream` over the cuda-python handle). This keeps `benchmarks/gpu_check.py`
able to measure copy/compute overlap where TensorRT is not installed.

Output tensors come from PyTorch's caching allocator on the compute stream; each slot keeps them (`slot.keep`)
until its D2H has completed (`result()`), so the allocator cannot hand their memory to the next batch early.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cellvit_trt.runtime.backends.streaming import RingBackend
from cellvit_trt.runtime.backends.torch import TorchBackend
from cellvit_trt.runtime.cuda.device import probe_device
from cellvit_trt.runtime.cuda.slots import SlotRing


class TorchCudaBackend(RingBackend, TorchBackend):
    kind = "torch-cuda"

    def __init__(self, checkpoint, device: int = 0, precision: str = "fp16", slots: int = 2, **kw):
        super().__init__(checkpoint, device=f"cuda:{device}", precision=precision, **kw)
        self.device_index = device
        self.n_slots = max(1, int(slots))
        self.max_in_flight = self.n_slots
        self._dev_in: list[Any] = []

    def _activate(self) -> None:
        self.device = probe_device(self.device_index)  # DeviceError with a clear reason before torch.cuda
        super()._activate()
        try:
            self._setup()
        except BaseException:
            self._deactivate()
            raise

    def _setup(self) -> None:
        torch, t = self._torch, self.tile_size
        # Output shapes per tile from one warm-up batch (also initialises cuDNN/cuBLAS before timing starts),
        # on PyTorch's default stream, where the weights were written.
        warm = torch.full((1, t, t, 3), 255, dtype=torch.uint8, device=self._device)
        outs = self._forward(warm)
        out_spec = {
            n: ((self.max_batch, *o.shape[1:]), np.dtype(str(o.dtype).replace("torch.", "")))
            for n, o in zip(self.output_names, outs, strict=True)
        }
        del warm, outs
        self.ring = SlotRing(
            self.n_slots, (self.max_batch, t, t, 3), out_spec, device_buffers=False, name=self.name
        )
        self._tstream = torch.cuda.ExternalStream(int(self.ring.compute), device=self._device)
        self._dev_in = [
            torch.empty((self.max_batch, t, t, 3), dtype=torch.uint8, device=self._device) for _ in self.slots
        ]
        # The weights and the warm-up are on the default stream; the ring's non-blocking streams do not
        # order themselves after it.
        torch.cuda.synchronize(self._device)

    def _deactivate(self) -> None:
        self._close_ring()
        self._dev_in = []
        super()._deactivate()

    def _submit(self, images: np.ndarray) -> int:
        ring = self.ring
        s = ring.acquire()
        n = images.shape[0]
        s.host_in.array[:n] = images
        dev_in = self._dev_in[s.index]
        ring.upload(s, images.nbytes, dst=dev_in.data_ptr())
        ring.start_compute(s)
        with self._torch.cuda.stream(self._tstream):
            outs = [o.contiguous() for o in self._forward(dev_in[:n])]
        s.keep = outs
        sources = {
            name: (o.data_ptr(), o.numel() * o.element_size())
            for name, o in zip(self.output_names, outs, strict=True)
        }
        return ring.download(s, sources, n)
