"""TensorRT backend over cuda-python: the shared slot ring (`runtime/cuda/slots.py`) with TensorRT as the
compute.

Each slot owns one execution context whose input shape and tensor addresses are bound once and re-bound only
when the batch size changes; all contexts share one activation ("scratch") allocation, which is safe because
they run on the same compute stream and so never concurrently. Optional CUDA graphs are captured per slot
(trtexec's recipe, samples/common/sampleInference.cpp): one eager enqueue with the final shape and addresses,
a synchronisation, then the capture; a re-bind drops the graph and the recipe starts again. On an integrated
GPU (Jetson) the slot buffers are mapped pinned memory given to TensorRT directly: no copies at all.

The CUDA probe runs before any TensorRT object exists (a TensorRT runtime without a driver segfaults on use).
Version-compatible plans carry host code (their lean runtime) and load only with
`runtime.engine_host_code_allowed = True`, set from the engine's verified sidecar.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cellvit_trt.errors import DeviceError, InputError, require
from cellvit_trt.runtime.backends.base import ModelMeta
from cellvit_trt.runtime.backends.streaming import RingBackend
from cellvit_trt.runtime.cuda import api
from cellvit_trt.runtime.cuda.device import probe_device
from cellvit_trt.runtime.cuda.memory import DeviceBuffer
from cellvit_trt.runtime.cuda.slots import Slot, SlotRing
from cellvit_trt.runtime.cuda.streams import Graph

log = logging.getLogger(__name__)


def read_plan(
    path: Path, trt: Any, device: Any, trusted_keys: str | Path | None = None
) -> tuple[bytes, dict[str, Any]]:
    """Engine bytes, verified by the engine stage before TensorRT sees them (sidecar SHA-256 and size, that
    it was built for this GPU, TensorRT and CUDA major, and with `trusted_keys` a valid signature by one of
    them); plus the sidecar (graph metadata, settings)."""
    from cellvit_trt.engine.environment import Environment
    from cellvit_trt.engine.sidecar import load_engine
    from cellvit_trt.engine.trt_api import tensorrt_version

    env = Environment.current(tensorrt_version(trt), device)
    # the sidecar returned is the one that was verified (and signed): never re-read after the checks
    return load_engine(path, environment=env, trusted_keys=trusted_keys)


@dataclass
class _Binding:
    """What one execution context has bound (one per slot; one for all slots without USER_MANAGED memory)."""

    context: Any
    batch: int = 0  # input batch bound with set_input_shape; 0 = none yet
    slot: int | None = None  # whose buffers the tensor addresses point at
    graph: Graph | None = None  # captured for exactly this batch and these addresses


class TensorRTBackend(RingBackend):
    kind = "tensorrt"

    def __init__(
        self,
        engine_path: str | Path,
        slots: int = 2,
        cuda_graphs: bool = False,
        zero_copy: bool | None = None,
        device: int = 0,
        plan_loader=None,
        trusted_keys: str | Path | None = None,
    ):
        super().__init__(f"tensorrt:{Path(engine_path).name}")
        self.engine_path = Path(engine_path)
        self.n_slots = max(1, int(slots))
        self.max_in_flight = self.n_slots
        self.cuda_graphs = cuda_graphs
        self.zero_copy_request = zero_copy
        self.device_index = device
        self.trusted_keys = trusted_keys
        self._plan_loader = plan_loader or read_plan
        self._objs: dict[str, Any] = {}
        self._bindings: list[_Binding] = []
        self._scratch: DeviceBuffer | None = None

    # ---- activation ---------------------------------------------------------------------------------------
    def _activate(self) -> None:
        self.device = probe_device(self.device_index)  # DeviceError before touching TensorRT
        trt = require("tensorrt", "trt", "the TensorRT backend")
        from cellvit_trt.engine.logger import make_logger

        plan, sidecar = self._plan_loader(self.engine_path, trt, self.device, self.trusted_keys)
        logger = make_logger(trt)
        runtime = trt.Runtime(logger)
        if (sidecar.get("settings") or {}).get("version_compatible"):
            runtime.engine_host_code_allowed = True  # the plan brings its own (lean) runtime: host code
        engine = runtime.deserialize_cuda_engine(plan)
        if engine is None:
            detail = "; ".join(logger.errors[-5:]) or "no message from TensorRT"
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
        self.meta = ModelMeta.from_json(sidecar.get("metadata"), self.tile_size, str(self.engine_path))
        out_spec: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        for n in self.output_names:
            oshape = tuple(engine.get_tensor_shape(n))
            if any(d < 0 for d in oshape[1:]):
                raise InputError(
                    f"engine {self.engine_path}: output {n!r} has dynamic non-batch dims {oshape}"
                )
            out_spec[n] = ((self.max_batch, *oshape[1:]), np.dtype(trt.nptype(engine.get_tensor_dtype(n))))

        self.zero_copy = (
            self.device.integrated if self.zero_copy_request is None else bool(self.zero_copy_request)
        )
        t = self.tile_size
        self.ring = SlotRing(
            self.n_slots, (self.max_batch, t, t, 3), out_spec, zero_copy=self.zero_copy, name=self.name
        )
        self._bindings = self._make_bindings(trt, engine)
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

    def _make_bindings(self, trt, engine) -> list[_Binding]:
        """One context per slot sharing one scratch allocation (module docstring); else one shared context."""
        strategy = getattr(getattr(trt, "ExecutionContextAllocationStrategy", None), "USER_MANAGED", None)
        if self.n_slots == 1 or strategy is None:
            ctx = engine.create_execution_context()
            _require_context(ctx, self.engine_path)
            return [_Binding(ctx)] * self.n_slots
        size = _scratch_size(engine)
        self._scratch = DeviceBuffer(size)
        bindings = []
        for _ in range(self.n_slots):
            ctx = engine.create_execution_context(strategy)
            _require_context(ctx, self.engine_path)
            if hasattr(ctx, "set_device_memory"):
                ctx.set_device_memory(self._scratch.ptr, size)
            else:  # TensorRT 10.0
                ctx.device_memory = self._scratch.ptr
            bindings.append(_Binding(ctx))
        return bindings

    @property
    def _shared_context(self) -> bool:
        return len({id(b) for b in self._bindings}) < len(self._bindings)

    def _deactivate(self) -> None:
        self._close_ring()
        for b in {id(b): b for b in self._bindings}.values():
            if b.graph is not None:
                b.graph.close()
        self._bindings = []
        if self._scratch is not None:
            self._scratch.close()
            self._scratch = None
        self._objs.clear()  # context/engine/runtime released here, after the memory they used

    # ---- the hot loop --------------------------------------------------------------------------------------
    def _submit(self, images: np.ndarray) -> int:
        ring = self.ring
        s = ring.acquire()
        n = images.shape[0]
        nb = n if self._dynamic else self.max_batch
        s.host_in.array[:n] = images
        if nb > n:
            s.host_in.array[n:nb] = 255  # static-batch engine: white padding tiles, sliced off in result()
        t = self.tile_size
        ring.upload(s, nb * t * t * 3)
        ring.start_compute(s)
        self._enqueue(s, nb)
        per = {name: buf.nbytes // self.max_batch for name, buf in s.host_out.items()}
        return ring.download(s, {name: (s.dev_out[name], per[name] * nb) for name in per}, n)

    def _bind(self, b: _Binding, s: Slot, nb: int) -> None:
        """Re-bind shape and addresses only when they change; a change drops the slot's CUDA graph."""
        ctx = b.context
        changed = False
        if b.batch != nb:
            if not ctx.set_input_shape("image", (nb, self.tile_size, self.tile_size, 3)):
                raise InputError(
                    f"{self.name}: batch {nb} is outside the engine's profile (max {self.max_batch})"
                )
            b.batch, changed = nb, True
        if b.slot != s.index:
            for name, ptr in (("image", s.dev_in), *s.dev_out.items()):
                if not ctx.set_tensor_address(name, ptr):
                    raise DeviceError(
                        f"{self.name}: TensorRT refused the address of tensor {name!r} ({ptr:#x}): "
                        f"{self._logged()}"
                    )
            b.slot, changed = s.index, True
        if changed and b.graph is not None:
            b.graph.close()
            b.graph = None

    def _enqueue(self, s: Slot, nb: int) -> None:
        b = self._bindings[s.index]
        self._bind(b, s, nb)
        if not self.cuda_graphs or self._shared_context:
            self._execute(b)
            return
        if b.graph is None:
            # trtexec: one eager enqueue (TensorRT's one-time work after a shape change happens here, outside
            # the capture), wait for it, then capture. The eager run already computes this batch; the
            # graph launch below recomputes it, once per slot and shape.
            self._execute(b)
            self.ring.compute.synchronize()
            try:
                b.graph = Graph(self.ring.compute, lambda: self._execute(b))
            except (api.CudaError, DeviceError) as exc:
                log.warning("%s: CUDA graph capture failed, running without graphs: %s", self.name, exc)
                self.cuda_graphs = False
                return
        b.graph.launch(self.ring.compute)

    def _execute(self, b: _Binding) -> None:
        if not b.context.execute_async_v3(int(self.ring.compute)):
            raise DeviceError(f"{self.name}: execute_async_v3 failed: {self._logged()}")

    def _logged(self) -> str:
        errors = self._objs["logger"].errors if "logger" in self._objs else []
        return "; ".join(errors[-3:]) or "no message from TensorRT"

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


def _require_context(ctx: Any, engine_path: Path) -> None:
    if ctx is None:
        raise DeviceError(f"engine {engine_path}: could not create an execution context (out of memory?)")


def _scratch_size(engine) -> int:
    for attr in ("get_device_memory_size_for_profile_v2", "get_device_memory_size_for_profile"):
        fn = getattr(engine, attr, None)
        if fn is not None:
            return int(fn(0))
    return int(getattr(engine, "device_memory_size_v2", None) or engine.device_memory_size)
