"""Install the simulator into the code under test and make engines and backends over it.

    with SimGPU("lazy", tmp_path) as gpu:
        with gpu.trt_backend(gpu.engine()) as be:
            be.infer(tiles)

`api.set_cudart(sim)` is the runtime's documented seam (runtime/cuda/api.py); `sys.modules["tensorrt"]` is
what `require("tensorrt")` imports; the PyTorch-CUDA backend gets the simulated `torch` through its parent's
activation (the checkpoint loading that the simulator replaces). Backend classes are looked up in
`sys.modules` at call time, so the mutation check can swap mutated modules in.
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path
from typing import Any

from cellvit_trt.config import to_dict
from cellvit_trt.engine.cuda_probe import probe_device
from cellvit_trt.engine.environment import Environment, cache_key, key_fields
from cellvit_trt.engine.settings import BuildSettings
from cellvit_trt.engine.sidecar import write_engine
from cellvit_trt.runtime.backends.base import ModelMeta
from cellvit_trt.runtime.backends.torch import TorchBackend
from cellvit_trt.runtime.cuda import api

from .cuda import CudaSim, Hazard
from .tensorrt import make_tensorrt, sim_plan
from .torch_sim import make_torch

TILE, TISSUE, MAX_BATCH = 16, 5, 4
META = {"nuclei_names": ["Background", "A", "B", "C", "D", "E"], "tile_size": TILE, "model": "sim"}


class SimGPU:
    def __init__(self, schedule: str, tmp: Path, *, surface: str = "11.x", **sim_kw: Any) -> None:
        self.schedule, self.tmp, self.surface, self.sim_kw = schedule, Path(tmp), surface, sim_kw

    def __enter__(self) -> SimGPU:
        self.cuda = CudaSim(self.schedule, **self.sim_kw)
        self.trt = make_tensorrt(self.surface, sim=self.cuda)
        self.torch = make_torch(self.cuda)
        self._previous_cudart = api.set_cudart(self.cuda)
        self._previous_trt = sys.modules.get("tensorrt")
        sys.modules["tensorrt"] = self.trt
        self._previous_activate = TorchBackend.__dict__["_activate"]
        TorchBackend._activate = _torch_activate(self.torch)
        return self

    def __exit__(self, exc_type, *exc: object) -> None:
        api.set_cudart(self._previous_cudart)
        if self._previous_trt is None:
            sys.modules.pop("tensorrt", None)
        else:
            sys.modules["tensorrt"] = self._previous_trt
        TorchBackend._activate = self._previous_activate
        if exc_type is None and self.cuda.late_hazards:
            raise Hazard("; ".join(self.cuda.late_hazards))

    # ---- engines -------------------------------------------------------------------------------------------
    def environment(self) -> Environment:
        return Environment.current(self.trt.__version__, probe_device(0, self.cuda))

    def engine(
        self,
        name: str = "sim.engine",
        *,
        env: Environment | None = None,
        settings: BuildSettings | None = None,
        **plan_kw: Any,
    ) -> Path:
        """An engine file with its sidecar, built (so the sidecar says) for `env` (default: this GPU)."""
        settings = settings or BuildSettings(max_batch=plan_kw.get("max_batch", MAX_BATCH))
        env = env or self.environment()
        plan_kw.setdefault("version_compatible", settings.version_compatible)
        plan_kw.setdefault("tensorrt", env.tensorrt)
        plan_kw.setdefault("sm", env.compute_capability)
        plan_kw.setdefault("hardware", settings.hardware_compatibility)
        plan = sim_plan(TILE, TISSUE, **{"max_batch": MAX_BATCH, **plan_kw})
        fields = key_fields("0" * 64, settings, env)
        path = self.tmp / name
        write_engine(
            path,
            plan,
            {"key": cache_key(fields), "key_fields": fields, "metadata": META, "settings": to_dict(settings)},
        )
        return path

    # ---- backends ------------------------------------------------------------------------------------------
    def trt_backend(self, engine: Path, **kw: Any) -> Any:
        cls = importlib.import_module("cellvit_trt.runtime.backends.trt").TensorRTBackend
        return cls(engine, **kw)

    def torch_cuda_backend(self, batch: int = MAX_BATCH, slots: int = 2) -> Any:
        cls = importlib.import_module("cellvit_trt.runtime.backends.torch_cuda").TorchCudaBackend
        return cls(self.tmp / "sim.pth", batch=batch, tile_size=TILE, slots=slots)


def _torch_activate(torch: Any):
    """Stands for TorchBackend._activate (checkpoint loading); everything after it is the real backend."""

    def activate(self: TorchBackend) -> None:
        self._torch = torch
        self._device = types.SimpleNamespace(type="cuda", index=0)
        self._graph = torch.Model(tissue=TISSUE)
        self.info = None
        self.tile_size = self.tile_size_request
        self.max_batch = self.batch
        self.output_names = self._graph.output_names
        self.meta = ModelMeta(tile_size=self.tile_size, name="sim")

    return activate


class Rig:
    """What a simulator test gets: a schedule, a folder, and `open()` for as many GPUs as it needs."""

    def __init__(self, schedule: str, tmp: Path) -> None:
        self.schedule, self.tmp = schedule, Path(tmp)
        self._open: list[SimGPU] = []

    def open(self, **kw: Any) -> SimGPU:
        gpu = SimGPU(self.schedule, self.tmp, **kw).__enter__()
        self._open.append(gpu)
        return gpu

    def close(self, failed: bool = False) -> None:
        while self._open:
            gpu = self._open.pop()
            gpu.__exit__(Exception if failed else None)
