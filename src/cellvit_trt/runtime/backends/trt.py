"""TensorRT backend over cuda-python: pinned ring, ping-pong device buffers, copy/compute streams, events.

Per slot (default 2, so one batch computes while the next one is copied in and the previous one copied out):

    h2d stream:     wait(consumed[s]) -> H2D(image[s]) -> record(h2d_done[s])
    compute stream: wait(h2d_done[s]) -> execute_async_v3 (or graph launch) -> record(compute_done[s])
                    (TensorRT records consumed[s] as soon as it has read the input: set_input_consumed_event)
    d2h stream:     wait(compute_done[s]) -> D2H(outputs[s]) -> record(d2h_done[s])
    host:           result(): synchronize(d2h_done[s]) -> copy out of the pinned slot

Each slot owns one execution context whose input shape and tensor addresses are bound once and re-bound only
when
the batch size changes; all contexts share one activation ("scratch") allocation, which is safe because they
run on the same compute stream and so never concurrently. Optional CUDA graphs are captured per (slot, batch)
after one eager warm-up. On an integrated GPU (Jetson) the slot buffers are mapped pinned memory given to
TensorRT directly: no copies at all.

The CUDA probe runs before any TensorRT object exists (a TensorRT runtime without a driver segfaults on use).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cellvit_trt.errors import DeviceError, InputError, require
from cellvit_trt.runtime.backends.base import Backend, ModelMeta, normalise_outputs
from cellvit_trt.runtime.cuda import api
from cellvit_trt.runtime.cuda.device import probe_device
from cellvit_trt.runtime.cuda.memory import DeviceBuffer, PinnedBuffer, copy_d2h, copy_h2d
from cellvit_trt.runtime.cuda.streams import Event, Graph, Stream, drain, elapsed_ms

log = logging.getLogger(__name__)


def read_plan(path: Path, trt: Any, device: Any) -> tuple[bytes, dict[str, Any]]:
    """Engine bytes, verified by the engine stage against their sidecar (SHA-256, size, and that the engine
    was
    built for this GPU, TensorRT and CUDA) before TensorRT sees them; plus the sidecar (graph metadata)."""
    from cellvit_trt.engine import load_engine_bytes, read_sidecar
    from cellvit_trt.engine.environment import Environment
    from cellvit_trt.engine.trt_api import tensorrt_version

    env = Environment.current(tensorrt_version(trt), device)
    data = load_engine_bytes(path, environment=env)
    return data, read_sidecar(path)


@dataclass
class _Slot:
    index: int
    context: Any
    host_in: PinnedBuffer
    dev_in: int  # device pointer of the input (mapped pointer on zero-copy)
    host_out: dict[str, PinnedBuffer]
    dev_out: dict[str, int]
    events: dict[str, Event]
    owned: list[Any] = field(default_factory=list)  # DeviceBuffers to free
    graphs: dict[int, Graph] = field(default_factory=dict)
    warmed: set[int] = field(default_factory=set)
    busy: tuple[int, int] | None = None  # (handle, n real tiles)


class TensorRTBackend(Backend):
    kind = "tensorrt"

    def __init__(
        self,
        engine_path: str | Path,
        slots: int = 2,
        cuda_graphs: bool = False,
        zero_copy: bool | None = None,
        device: int = 0,
        plan_loader=None,
    ):
        super().__init__(f"tensorrt:{Path(engine_path).name}")
        self.engine_path = Path(engine_path)
        self.n_slots = max(1, int(slots))
        self.max_in_flight = self.n_slots
        self.cuda_graphs = cuda_graphs
        self.zero_copy_request = zero_copy
        self.device_index = device
        self._plan_loader = plan_loader or read_plan
        self._objs: dict[str, Any] = {}

    # ---- activation ---------------------------------------------------------------------------------------
    def _activate(self) -> None:
        self.device = probe_device(self.device_index)  # DeviceError before touching TensorRT
        trt = require("tensorrt", "trt", "the TensorRT backend")
        from cellvit_trt.runtime.backends.trt_logger import make_logger

        plan, sidecar = self._plan_loader(self.engine_path, trt, self.device)
        logger = make_logger(trt)
        runtime = trt.Runtime(logger)
        engine = runtime.deserialize_cuda_engine(plan)
        if engine is None:
            detail = "; ".join(logger.errors) or "no message from TensorRT"
            raise InputError(
                f"engine {self.engine_path}: TensorRT {getattr(trt, '__version__', '?')} cannot "
                f"deserialise it (built for another TensorRT version or GPU?): {detail}"
            )
        self._objs.update(trt=trt, logger=logger, runtime=runtime, engine=engine)
        try:
            self._setup(trt, engine, sidecar)
        except BaseException:
            self._deactivate()
            raise

    def _setup(self, trt, engine, sidecar: dict[str, Any]) -> None:
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if inputs != ["image"]:
            raise InputError(f"engine {self.engine_path}: expected one input 'image', got {inputs}")
        shape = tuple(engine.get_tensor_shape("image"))
        if (
            len(shape) != 4
            or shape[3] != 3
            or shape[1] <= 0
            or shape[1] != shape[2]
            or np.dtype(trt.nptype(engine.get_tensor_dtype("image"))) != np.uint8
        ):
            raise InputError(f"engine {self.engine_path}: input 'image' must be uint8[N,H,H,3], got {shape}")
        self.tile_size = int(shape[1])
        self._dynamic = shape[0] == -1
        self.max_batch = (
            int(engine.get_tensor_profile_shape("image", 0)[2][0]) if self._dynamic else int(shape[0])
        )
        self.output_names = tuple(n for n in names if n != "image")
        meta = sidecar.get("metadata")
        self.meta = ModelMeta.from_json(meta, self.tile_size, str(self.engine_path))
        self._out_spec: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        for n in self.output_names:
            oshape = tuple(engine.get_tensor_shape(n))
            if any(d < 0 for d in oshape[1:]):
                raise InputError(
                    f"engine {self.engine_path}: output {n!r} has dynamic non-batch dims {oshape}"
                )
            self._out_spec[n] = (
                (self.max_batch, *oshape[1:]),
                np.dtype(trt.nptype(engine.get_tensor_dtype(n))),
            )

        self.zero_copy = (
            self.device.integrated if self.zero_copy_request is None else bool(self.zero_copy_request)
        )
        self.compute = Stream()
        self.h2d = self.compute if self.zero_copy else Stream()
        self.d2h = self.compute if self.zero_copy else Stream()

        # One context per slot sharing one scratch allocation (see module docstring); else one shared context.
        strategy = getattr(getattr(trt, "ExecutionContextAllocationStrategy", None), "USER_MANAGED", None)
        self._scratch = None
        if self.n_slots > 1 and strategy is not None:
            size = _scratch_size(engine)
            self._scratch = DeviceBuffer(size)
            contexts = []
            for _ in range(self.n_slots):
                ctx = engine.create_execution_context(strategy)
                if hasattr(ctx, "set_device_memory"):
                    ctx.set_device_memory(self._scratch.ptr, size)
                else:  # TensorRT 10.0
                    ctx.device_memory = self._scratch.ptr
                contexts.append(ctx)
        else:
            contexts = [engine.create_execution_context()] * self.n_slots
        if any(c is None for c in contexts):
            raise DeviceError(
                f"engine {self.engine_path}: could not create an execution context (out of memory?)"
            )
        self._shared_context = len({id(c) for c in contexts}) == 1 and self.n_slots > 1
        self._bound: dict[int, dict[str, Any]] = {}
        self.slots = [self._make_slot(i, ctx) for i, ctx in enumerate(contexts)]
        if not self._shared_context:
            for s in self.slots:  # set once per context: TensorRT records it when 'image' has been read
                s.context.set_input_consumed_event(int(s.events["consumed"]))
        self._next = 0
        self._origin = Event(timing=True)
        self._origin.record(self.compute)
        self.timeline: list[dict[str, float]] | None = None  # set to [] to record event times (ms)
        log.info(
            "TensorRT %s on %s (SM %s): batch <= %d, tile %d, %d slots, zero-copy %s, graphs %s",
            getattr(trt, "__version__", "?"),
            self.device.name,
            self.device.sm,
            self.max_batch,
            self.tile_size,
            self.n_slots,
            self.zero_copy,
            self.cuda_graphs,
        )

    def _make_slot(self, i: int, ctx) -> _Slot:
        t = self.tile_size
        mapped = self.zero_copy
        host_in = PinnedBuffer((self.max_batch, t, t, 3), np.uint8, mapped=mapped)
        owned: list[Any] = []
        host_out, dev_out = {}, {}
        for n, (shape, dtype) in self._out_spec.items():
            host_out[n] = PinnedBuffer(shape, dtype, mapped=mapped)
            if mapped:
                dev_out[n] = host_out[n].device_ptr
            else:
                buf = DeviceBuffer(host_out[n].nbytes)
                owned.append(buf)
                dev_out[n] = buf.ptr
        if mapped:
            dev_in = host_in.device_ptr
        else:
            buf = DeviceBuffer(host_in.nbytes)
            owned.append(buf)
            dev_in = buf.ptr
        events = {"consumed": Event()}
        for k in ("h2d_start", "h2d_done", "compute_start", "compute_done", "d2h_done"):
            events[k] = Event(timing=True)
        return _Slot(i, ctx, host_in, dev_in, host_out, dev_out, events, owned)

    def _deactivate(self) -> None:
        drain(
            getattr(self, name, None) for name in ("h2d", "compute", "d2h")
        )  # nothing may still use the memory
        if getattr(self, "_origin", None) is not None:
            self._origin.close()
            self._origin = None
        for s in getattr(self, "slots", []):
            for g in s.graphs.values():
                g.close()
            for e in s.events.values():
                e.close()
            for b in [s.host_in, *s.host_out.values(), *s.owned]:
                b.close()
        self.slots = []
        for name in ("compute", "h2d", "d2h"):
            stream = getattr(self, name, None)
            if stream is not None:
                stream.close()
                setattr(self, name, None)
        if getattr(self, "_scratch", None) is not None:
            self._scratch.close()
            self._scratch = None
        self._objs.clear()  # context/engine/runtime released here, after the memory they used

    # ---- the hot loop --------------------------------------------------------------------------------------
    def _submit(self, images: np.ndarray) -> int:
        s = self.slots[self._next % self.n_slots]
        if s.busy is not None:
            raise RuntimeError(
                f"{self.name}: {self.n_slots} batches already in flight; collect a result first"
            )
        self._next += 1
        n = images.shape[0]
        nb = n if self._dynamic else self.max_batch
        s.host_in.array[:n] = images
        if nb > n:
            s.host_in.array[n:nb] = 255  # static-batch engine: white padding tiles, sliced off in result()
        self._bind(s, nb)
        ev = s.events
        if not self.zero_copy:
            self.h2d.wait(ev["consumed"])  # the engine has read this slot's previous input
            ev["h2d_start"].record(self.h2d)
            copy_h2d(s.dev_in, s.host_in, nb * self.tile_size * self.tile_size * 3, int(self.h2d))
            ev["h2d_done"].record(self.h2d)
            self.compute.wait(ev["h2d_done"])
        ev["compute_start"].record(self.compute)
        self._enqueue(s, nb)
        ev["compute_done"].record(self.compute)
        if not self.zero_copy:
            self.d2h.wait(ev["compute_done"])
            for name, buf in s.host_out.items():
                per = buf.nbytes // self.max_batch
                copy_d2h(buf, s.dev_out[name], per * nb, int(self.d2h))
        ev["d2h_done"].record(self.d2h)
        self._seq += 1
        s.busy = (self._seq, n)
        return self._seq

    def _bind(self, s: _Slot, nb: int) -> None:
        """Re-bind shape and addresses only when they change (per context, so once per slot normally)."""
        ctx = s.context
        state = self._bound.setdefault(id(ctx), {"batch": 0, "slot": None})
        if state["batch"] != nb:
            if not ctx.set_input_shape("image", (nb, self.tile_size, self.tile_size, 3)):
                raise InputError(
                    f"{self.name}: batch {nb} is outside the engine's profile (max {self.max_batch})"
                )
            state["batch"] = nb
        if state["slot"] != s.index:
            ctx.set_tensor_address("image", s.dev_in)
            for name, ptr in s.dev_out.items():
                ctx.set_tensor_address(name, ptr)
            if self._shared_context:
                ctx.set_input_consumed_event(int(s.events["consumed"]))
            state["slot"] = s.index

    def _enqueue(self, s: _Slot, nb: int) -> None:
        graphs = self.cuda_graphs and not self._shared_context
        if graphs and nb in s.graphs:
            s.graphs[nb].launch(self.compute)
            return
        if graphs and nb in s.warmed:
            try:
                s.graphs[nb] = Graph(self.compute, lambda: self._execute(s))
            except (api.CudaError, DeviceError) as exc:
                log.warning("%s: CUDA graph capture failed, running without graphs: %s", self.name, exc)
                self.cuda_graphs = False
                self._execute(s)
                return
            s.graphs[nb].launch(self.compute)
            return
        self._execute(s)
        s.warmed.add(nb)

    def _execute(self, s: _Slot) -> None:
        if not s.context.execute_async_v3(int(self.compute)):
            detail = "; ".join(self._objs["logger"].errors) if "logger" in self._objs else ""
            raise DeviceError(f"{self.name}: execute_async_v3 failed {detail}".rstrip())

    def _result(self, handle: int) -> dict[str, np.ndarray]:
        s = next((x for x in self.slots if x.busy and x.busy[0] == handle), None)
        if s is None:
            raise RuntimeError(f"{self.name}: unknown or already collected handle {handle}")
        oldest = min(x.busy[0] for x in self.slots if x.busy)
        if handle != oldest:
            raise RuntimeError(
                f"{self.name}: results must be collected in submission order (handle {handle})"
            )
        ev = s.events
        ev["d2h_done"].synchronize()
        n = s.busy[1]
        out = {name: buf.array[:n].copy() for name, buf in s.host_out.items()}
        s.busy = None
        compute = elapsed_ms(ev["compute_start"], ev["compute_done"]) / 1e3
        if self.zero_copy:
            self.last_timings = {"compute": compute}
        else:
            self.last_timings = {
                "h2d": elapsed_ms(ev["h2d_start"], ev["h2d_done"]) / 1e3,
                "compute": compute,
                "d2h": elapsed_ms(ev["compute_done"], ev["d2h_done"]) / 1e3,
            }
        if self.timeline is not None:
            keys = (
                ("compute_start", "compute_done")
                if self.zero_copy
                else ("h2d_start", "h2d_done", "compute_start", "compute_done", "d2h_done")
            )
            self.timeline.append({k: elapsed_ms(self._origin, ev[k]) for k in keys})
        return normalise_outputs(out, self.name)

    def describe(self) -> dict:
        d = super().describe()
        if getattr(self, "device", None) is not None:
            d.update(
                device=self.device.name,
                sm=self.device.sm,
                zero_copy=self.zero_copy,
                slots=self.n_slots,
                cuda_graphs=self.cuda_graphs,
                engine=str(self.engine_path),
            )
        return d


def _scratch_size(engine) -> int:
    for attr in ("get_device_memory_size_for_profile_v2", "get_device_memory_size_for_profile"):
        fn = getattr(engine, attr, None)
        if fn is not None:
            return int(fn(0))
    return int(getattr(engine, "device_memory_size_v2", None) or engine.device_memory_size)
