"""The slice of `torch` the PyTorch-CUDA backend uses, over a `CudaSim` (PyTorch docs, "CUDA semantics").

- Work is issued to the *current* stream: PyTorch's default (the legacy stream, handle 0) unless inside
  `torch.cuda.stream(s)`; `torch.cuda.ExternalStream(handle)` wraps a cuda-python stream.
- `torch.full` writes on the current stream; `torch.empty` allocates without writing (reading it before a
  write is a `Hazard`); the model's weights are written on the default stream when the model is made (like
  `.to("cuda")`), so work on other streams must be ordered after them (`torch.cuda.synchronize`).
- `torch.cuda.synchronize()` waits for every stream of the device.
- The caching allocator: a tensor's memory belongs to the stream it was allocated on; freeing it while work
  on *another* stream still uses it (without `record_stream`) lets the allocator hand it out again under
  that work ("CUDA semantics: Stream semantics of the caching allocator"). Recorded in `sim.late_hazards`
  (a `__del__` cannot raise) and failed by the harness.
"""

from __future__ import annotations

import contextlib
import types
from typing import Any

import numpy as np

from .tensorrt import reference_outputs


class Dtype:
    def __init__(self, name: str) -> None:
        self.name, self.np = name, np.dtype(name)

    def __str__(self) -> str:
        return f"torch.{self.name}"


def make_torch(sim: Any) -> types.SimpleNamespace:
    """A `torch` stand-in bound to `sim` (install it as the backend's `_torch`)."""
    uint8, float16, float32 = Dtype("uint8"), Dtype("float16"), Dtype("float32")
    current = [0]  # the current stream's handle

    class Tensor:
        def __init__(self, shape, dtype: Dtype, ptr: int | None = None, base: Tensor | None = None) -> None:
            self.shape, self.dtype, self._base = tuple(int(d) for d in shape), dtype, base
            nbytes = max(int(np.prod(self.shape)) * dtype.np.itemsize, 1)
            if ptr is None:
                err, ptr = sim.cudaMalloc(nbytes)
                assert int(err) == 0
                self.stream = current[0]
            else:
                self.stream = base.stream
            self.ptr, self.nbytes = int(ptr), nbytes

        def data_ptr(self) -> int:
            return self.ptr

        def numel(self) -> int:
            return int(np.prod(self.shape))

        def element_size(self) -> int:
            return self.dtype.np.itemsize

        def contiguous(self) -> Tensor:
            return self

        def __getitem__(self, index: slice) -> Tensor:
            assert isinstance(index, slice) and index.start in (None, 0) and index.step is None
            n = self.shape[0] if index.stop is None else min(index.stop, self.shape[0])
            return Tensor((n, *self.shape[1:]), self.dtype, self.ptr, self._base or self)

        def __del__(self) -> None:
            if self._base is not None:
                return
            for s in sim.streams.values():
                if s.handle != self.stream and any(a.base == self.ptr for op in s.queue for a in op.uses):
                    sim.late_hazards.append(
                        f"caching allocator: a tensor allocated on stream {self.stream} was freed while "
                        f"stream {s.handle} still had work on it (missing synchronisation or record_stream)"
                    )
                    return

    def full(shape, value, dtype: Dtype, device: Any = None) -> Tensor:
        t = Tensor(shape, dtype)
        payload = np.full(t.shape, value, dtype.np)
        sim.launch(
            current[0],
            "torch.full",
            lambda: sim.write_device(t.ptr, payload, "torch.full"),
            [sim._find(t.ptr)],
        )
        return t

    def empty(shape, dtype: Dtype, device: Any = None) -> Tensor:
        return Tensor(shape, dtype)

    class ExternalStream:
        def __init__(self, handle: int, device: Any = None) -> None:
            self.handle = int(handle)

    @contextlib.contextmanager
    def stream(s: ExternalStream):
        previous, current[0] = current[0], s.handle
        try:
            yield
        finally:
            current[0] = previous

    def synchronize(device: Any = None) -> None:
        err = sim.cudaDeviceSynchronize()[0]
        assert int(err) == 0, err

    class Model:
        """The deployment graph: uint8 [N,H,W,3] -> fg, hv, type_map, tissue_logits (reference_outputs)."""

        output_names = ("fg", "hv", "type_map", "tissue_logits")

        def __init__(self, tissue: int = 5) -> None:
            self.tissue = tissue
            self.weights = full((64,), 1, float32)  # written on the default stream, like .to("cuda")

        def __call__(self, x: Tensor) -> list[Tensor]:
            n, t = x.shape[0], x.shape[1]
            dtypes = {"fg": uint8, "hv": float16, "type_map": uint8, "tissue_logits": float32}
            shapes = {
                "fg": (n, t, t),
                "hv": (n, 2, t, t),
                "type_map": (n, t, t),
                "tissue_logits": (n, self.tissue),
            }
            outs = {k: Tensor(shapes[k], dtypes[k]) for k in self.output_names}
            w, src = self.weights, x

            def run():
                sim.read_device(w.ptr, w.nbytes, "model reads its weights")
                raw = sim.read_device(src.ptr, src.numel(), "model reads its input")
                for k, v in reference_outputs(raw.reshape(src.shape), self.tissue).items():
                    sim.write_device(outs[k].ptr, v, f"model writes {k}")

            touched = sim.uses(
                (w.ptr, w.nbytes), (src.ptr, src.numel()), *((o.ptr, o.nbytes) for o in outs.values())
            )
            sim.launch(current[0], f"model forward {x.shape}", run, touched)
            return [outs[k] for k in self.output_names]

    cuda = types.SimpleNamespace(ExternalStream=ExternalStream, stream=stream, synchronize=synchronize)
    return types.SimpleNamespace(
        uint8=uint8,
        float16=float16,
        float32=float32,
        full=full,
        empty=empty,
        cuda=cuda,
        Model=Model,
        inference_mode=contextlib.nullcontext,
        autocast=lambda *a, **k: contextlib.nullcontext(),
    )
