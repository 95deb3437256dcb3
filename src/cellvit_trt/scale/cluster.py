"""The Ray side of a job: the real `ray` module, the connection, and what one slide asks of a node.

    ray = require_ray()
    connect(ray, "auto")                                   # or LOCAL: start Ray on this machine
    placement = place(settings, scale, ray.nodes(), n_slides)
    Worker.options(**placement.actor_options(...))

Placement is by resources, never by hand: a slide on a GPU backend (TensorRT, PyTorch-CUDA, an engine file,
ONNX Runtime with a CUDA/TensorRT provider) asks for one GPU and `cpus_per_slide` CPUs; any other for CPUs
only. Ray then puts each worker on a node that has them, and Ray's `CUDA_VISIBLE_DEVICES` gives each its own
GPU.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from pathlib import Path
from typing import Any

from cellvit_trt.errors import ConfigError, DependencyError, DeviceError

log = logging.getLogger(__name__)

DEFAULT_CPUS_PER_SLIDE = 4.0
ENV_PREFIX = "CELLVIT_TRT_"  # the driver's settings of this package (cache root, ...) go to every worker
_GPU_PROVIDERS = ("cuda", "tensorrt", "CUDAExecutionProvider", "TensorrtExecutionProvider")


def require_ray() -> Any:
    """The installed Ray; a DependencyError (install hint) without it or when `ray` is not Ray (a stand-in
    module registered by some other code would otherwise fail much later, in a worker)."""
    import importlib

    try:
        ray = importlib.import_module("ray")
    except ImportError as exc:
        raise DependencyError(
            f"--ray needs Ray, which is not installed ({exc}); install it with: "
            "pip install 'cellvit-trt[ray]'"
        ) from exc
    if getattr(ray, "__cellvit_trt_stub__", False) or not callable(getattr(ray, "remote", None)):
        raise DependencyError(
            f"--ray: the module 'ray' in this process is not Ray "
            f"({getattr(ray, '__file__', None) or ray!r}); install it with: pip install 'cellvit-trt[ray]'"
        )
    return ray


def worker_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIX)}


def connect(ray: Any, address: str) -> None:
    """`ray.init` for ADDRESS (see ScaleSettings); Ray's own log lines only from warnings up."""
    from cellvit_trt.scale.settings import LOCAL

    kwargs: dict[str, Any] = {
        "logging_level": logging.WARNING,
        "log_to_driver": True,
        "runtime_env": {"env_vars": worker_env()},
    }
    if address == LOCAL:
        if not os.environ.get("RAY_ADDRESS"):
            kwargs["include_dashboard"] = False
        target = None
    else:
        target = address
    try:
        ray.init(address=target, **kwargs)
    except (OSError, TimeoutError, ValueError) as exc:
        what = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        if target is None and not os.environ.get("RAY_ADDRESS"):
            raise ConfigError(
                f"--ray: Ray could not start on this machine ({what}); Ray keeps its sockets under "
                "$RAY_TMPDIR (default /tmp), whose path must stay short"
            ) from exc
        raise ConfigError(
            f"--ray {address}: no Ray cluster could be joined ({what}); start one with `ray start --head` "
            "(docs/scale-out.md), or use --ray without ADDRESS for one on this machine. A cluster with "
            "token authentication (the default of `ray start` in recent Ray) also needs RAY_AUTH_MODE=token "
            "and its token (~/.ray/auth_token or RAY_AUTH_TOKEN) on this side"
        ) from exc


def wants_gpu(settings: Any, cluster_gpus: float) -> bool:
    """Does a slide of these settings run on a GPU (so its worker must ask Ray for one)?"""
    from cellvit_trt.runtime.backends import ENGINE_SUFFIXES

    if Path(str(settings.model)).suffix.lower() in ENGINE_SUFFIXES:
        return True
    if settings.backend in ("tensorrt", "torch-cuda"):
        return True
    if settings.backend == "torch":
        return False
    providers = [str(p) for p in (settings.providers or [])]
    if settings.backend == "onnxruntime":
        if any(p in _GPU_PROVIDERS for p in providers):
            return True
        return providers in (["auto"],) and cluster_gpus > 0
    return cluster_gpus > 0  # auto: the workers' own choice is a GPU backend wherever a GPU is


@dataclasses.dataclass(frozen=True)
class Placement:
    cpus: float  # per slide (per worker)
    gpus: float  # per slide: 1 or 0
    workers: int
    capacity: int  # workers the cluster can hold at once
    nodes: int

    def actor_options(self) -> dict[str, Any]:
        return {"num_cpus": self.cpus, "num_gpus": self.gpus}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def place(settings: Any, scale: Any, nodes: list[dict[str, Any]], slides: int) -> Placement:
    """Resources per slide and the number of workers, from the alive nodes' resources (`ray.nodes()`)."""
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive", n.get("alive", False))]
    if not alive:
        raise DeviceError("--ray: the Ray cluster has no alive node")
    gpus_total = sum(r.get("GPU", 0.0) for r in alive)
    gpu = wants_gpu(settings, gpus_total)
    pool = [r for r in alive if r.get("GPU", 0.0) >= 1] if gpu else alive
    if not pool:
        raise DeviceError(
            f"--ray: backend {settings.backend!r} with model {settings.model} runs one slide per GPU, and no "
            "node of the cluster has a GPU (`ray status`); start workers with `ray start --num-gpus N`, "
            "or run on CPUs with --backend onnxruntime"
        )
    largest = max(r.get("CPU", 0.0) for r in pool)
    cpus = float(scale.cpus_per_slide or DEFAULT_CPUS_PER_SLIDE)
    if cpus > largest:
        if scale.cpus_per_slide is not None:
            log.warning(
                "--ray-cpus-per-slide %g: the largest node has %g CPUs; asking for %g", cpus, largest, largest
            )
        cpus = largest
    if cpus <= 0:
        raise DeviceError("--ray: no node of the cluster offers CPUs to run a slide on")

    def fits(r: dict[str, float]) -> int:
        n = math.floor(r.get("CPU", 0.0) / cpus + 1e-9)
        return min(n, math.floor(r.get("GPU", 0.0))) if gpu else n

    capacity = sum(fits(r) for r in pool)
    workers = max(1, min(scale.workers or capacity, max(1, slides)))
    return Placement(cpus=cpus, gpus=1.0 if gpu else 0.0, workers=workers, capacity=capacity, nodes=len(pool))
