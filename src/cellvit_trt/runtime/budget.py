"""The batch a run uses, from the memory it may take and what the model costs per tile; checked up front.

    plan = plan_run(backend, spec, requested=None, max_memory="8G", ...)   # BatchPlan
    print(plan.describe())      # "batch 1: CPU backend: ... (memory estimate 1.3 GiB host, budget ...)"

- The budget: `--max-memory` for the host (else what this process may still take: MemAvailable, or a cgroup
  limit's headroom where tighter), and on a GPU the device's free memory from the CUDA probe. On an
  integrated GPU (Jetson, `cudaDevAttrIntegrated`) host and device share one DRAM: their sum must fit.
- The cost: `footprint.Footprint`, measured once per model/backend/tile size in a fresh process, cached.
  Host estimate at batch b = max(what this process holds, the probe's loaded backend) + b x per tile
  + post-processing threads x post cost per tile + the tiles the pipeline's queues hold; 10 % headroom on
  top for what the probe does not see (slide reader caches, the merge's pending row, writers).
- The choice: without `-b`, the largest batch up to the backend's preferred one that fits: 8 on a GPU
  (batches keep it busy), 1 on a CPU (a 1024 px tile already spreads over every core inside each operator:
  batch 8 multiplies the activations by 8 and changed a run's CPU time by +6 % to -17 % on the demo model;
  benchmarks/RESULTS.md, "Memory"). A batch asked for with `-b` that does not fit, or no batch at all, is a
  `BudgetError` before the run, naming the budget and the estimate.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cellvit_trt.errors import InputError
from cellvit_trt.runtime.footprint import Footprint
from cellvit_trt.runtime.memory import Available, gib

GPU_PREFERRED_BATCH = 8
CPU_PREFERRED_BATCH = 1
HEADROOM = 1.10  # estimate x 1.1 must fit the budget
_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


class BudgetError(InputError):
    """The run cannot fit its memory budget (raised before the run starts)."""


def parse_size(text: str | int | float) -> int:
    """'8G', '8GB', '8GiB', '1500M', '2.5g', 123456 (bytes) -> bytes. Units are powers of 1024."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(?:i?b)?\s*", str(text).lower())
        if not m:
            raise InputError(f"max_memory: got {text!r}, expected a size such as 8G, 1500M or 2.5GiB")
        value = float(m.group(1)) * _UNITS[m.group(2)]
    if value <= 0:
        raise InputError(f"max_memory: got {text!r}, expected a positive size")
    return int(value)


@dataclass(frozen=True)
class DeviceBudget:
    """What the CUDA probe says about the GPU a run uses (engine.cuda_probe.CudaDevice)."""

    name: str
    free: int
    total: int
    integrated: bool

    @classmethod
    def from_probe(cls, dev: Any) -> DeviceBudget:
        return cls(str(dev.name), int(dev.free_memory), int(dev.total_memory), bool(dev.integrated))


@dataclass(frozen=True)
class Pipeline:
    """The pipeline settings that set how many tiles are alive besides the batch being computed."""

    workers: int
    tiles_queued: int  # tiles waiting to be batched + a batch of outputs in post-processing + the post queue


@dataclass(frozen=True)
class BatchPlan:
    batch: int
    reason: str
    host_estimate: int
    host_budget: Available
    device_estimate: int | None = None
    device_budget: DeviceBudget | None = None
    footprint: Footprint | None = None
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        dev = ""
        if self.device_estimate is not None and self.device_budget is not None:
            dev = f"; device {gib(self.device_estimate)} of {gib(self.device_budget.free)} free"
        return (
            f"batch {self.batch}: {self.reason}; estimated peak {gib(self.host_estimate)} of a "
            f"{gib(self.host_budget.bytes)} budget ({self.host_budget.source}){dev}"
        )

    def spare_host(self) -> int:
        """Host bytes the budget leaves beyond the planned peak (with its headroom; on an integrated GPU the
        device's share of the one DRAM counted too): what later, input-sized buffers may take."""
        used = self.host_estimate
        if self.device_budget is not None and self.device_budget.integrated and self.device_estimate:
            used += self.device_estimate
        return max(0, int(self.host_budget.bytes - used * HEADROOM))

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch": self.batch,
            "reason": self.reason,
            "host_estimate_mb": _mb(self.host_estimate),
            "host_budget_mb": _mb(self.host_budget.bytes),
            "host_budget_source": self.host_budget.source,
            "device_estimate_mb": _mb(self.device_estimate),
            "device_free_mb": _mb(self.device_budget.free if self.device_budget else None),
            "footprint": self.footprint.to_dict() if self.footprint is not None else None,
            "notes": list(self.notes),
        }


def _mb(n: int | None) -> float | None:
    return None if n is None else round(n / 2**20, 1)


def host_estimate(fp: Footprint, batch: int, pipe: Pipeline, held: int = 0) -> int:
    """Peak host bytes of a run at `batch` (before headroom); `held`: what the process already holds."""
    return (
        max(held, fp.host_fixed)
        + batch * fp.host_per_tile
        + pipe.workers * fp.post_per_worker
        + (pipe.tiles_queued + batch) * fp.tile_bytes
    )


def device_estimate(fp: Footprint, batch: int) -> int | None:
    if fp.device_fixed is None:
        return None
    return fp.device_fixed + batch * (fp.device_per_tile or 0)


def choose_batch(
    fp: Footprint,
    *,
    requested: int | None,
    preferred: int,
    max_batch: int,
    host: Available,
    pipeline: Pipeline,
    device: DeviceBudget | None = None,
    held: int = 0,
    preferred_why: str = "",
) -> BatchPlan:
    """The batch to run (see the module doc); BudgetError when the requested batch, or batch 1, cannot fit."""

    def cost(b: int) -> tuple[int, int | None]:
        return host_estimate(fp, b, pipeline, held), device_estimate(fp, b)

    def fits(b: int) -> bool:
        h, d = cost(b)
        if h * HEADROOM > host.bytes:
            return False
        if d is None or device is None:
            return True
        if d * HEADROOM > device.free:
            return False
        return not device.integrated or (h + d) * HEADROOM <= host.bytes  # one DRAM for both

    def per_tile() -> str:
        s = f"{gib(fp.host_per_tile)} per tile"
        if fp.device_per_tile is not None:
            s += f" (+{gib(fp.device_per_tile)} on the device)"
        return s

    top = max(1, min(max_batch, requested or preferred))
    fitting = next((b for b in range(top, 0, -1) if fits(b)), None)
    if requested is not None:
        if fitting != requested:
            raise BudgetError(_too_big(requested, fitting, cost(requested), host, device, fp, per_tile()))
        batch, reason = requested, f"as asked, {per_tile()}"
    elif fitting is None:
        raise BudgetError(_too_big(1, None, cost(1), host, device, fp, per_tile()))
    elif fitting == top:
        batch, reason = fitting, f"{preferred_why}; {per_tile()}"
    else:
        batch = fitting
        reason = f"the largest batch up to {top} that fits the budget; {per_tile()}"
    h, d = cost(batch)
    return BatchPlan(batch, reason, h, host, d, device, fp, list(fp.notes))


def _too_big(
    batch: int,
    fitting: int | None,
    cost: tuple[int, int | None],
    host: Available,
    device: DeviceBudget | None,
    fp: Footprint,
    per_tile: str,
) -> str:
    h, d = cost
    parts = [f"host {gib(h * HEADROOM)} (with 10 % headroom) of {host.describe()}"]
    if d is not None and device is not None:
        where = "shared with the host" if device.integrated else "free"
        parts.append(f"device {gib(d * HEADROOM)} of {gib(device.free)} {where} on {device.name}")
    hint = (
        f"; batch {fitting} fits (-b {fitting})"
        if fitting
        else "; not even one tile fits: raise --max-memory, free memory, or use a smaller tile size/model"
    )
    return f"batch {batch} does not fit the memory budget: it needs {'; '.join(parts)} ({per_tile}){hint}"


def preferred_batch(gpu: bool) -> tuple[int, str]:
    if gpu:
        return GPU_PREFERRED_BATCH, "GPU backend: batches keep the GPU busy"
    return CPU_PREFERRED_BATCH, (
        "CPU backend: a tile already spreads over every core; a larger batch multiplies the activations "
        "and saves little time"
    )


def plan_run(
    backend: Any,
    spec: dict[str, Any],
    *,
    requested: int | None,
    max_memory: str | int | None,
    workers: int,
    readers: int,
    queue_size: int | None,
    in_flight: int,
    cache_dir: Any = None,
    device_probe: Any = None,
    pipeline_for: Callable[[int], Pipeline] | None = None,
) -> BatchPlan:
    """Measure (or read) the backend's footprint and choose the batch, before the backend is activated.

    `spec`: the `open_backend` arguments of `backend` (the footprint probe opens the same backend).
    `device_probe`: a CudaDevice-like object (free_memory, total_memory, integrated, name); by default the
    runtime's CUDA probe is asked when the backend uses a GPU. `pipeline_for(batch)`: the tiles alive
    besides the batch and the post-processing threads, for callers whose pipelines are not one
    `runtime.pipeline.Pipeline` (`serve` runs one per open slide); by default that of `run`."""
    from cellvit_trt.runtime.footprint import FootprintError, footprint, model_file
    from cellvit_trt.runtime.memory import available_host, current_rss_bytes
    from cellvit_trt.runtime.pipeline import Pipeline as RuntimePipeline

    backend.verify()  # before the probe's process loads the model
    file = model_file(backend)
    if file is None:
        raise InputError(f"{backend.name}: no model file to measure the memory footprint of")
    index = backend.memory_device()
    gpu = index is not None
    device = None
    if gpu:
        if device_probe is None:
            from cellvit_trt.runtime.cuda.device import probe_device

            device_probe = probe_device(index)
        device = DeviceBudget.from_probe(device_probe)
    host = available_host()
    held = current_rss_bytes()
    try:
        fp = footprint(spec, file, backend.kind, cache_dir)
    except FootprintError as exc:
        dev = f"; {gib(device.free)} free on {device.name}" if device is not None else ""
        hint = (
            " (a TensorRT engine's device memory is sized for the largest batch it was built for: "
            "build it with a smaller --max-batch)"
            if backend.kind == "tensorrt"
            else ""
        )
        raise BudgetError(f"{exc}; budget: {host.describe()}{dev}{hint}") from exc
    max_batch = int(spec.get("batch") or GPU_PREFERRED_BATCH)
    preferred, why = preferred_batch(gpu)
    top = min(max_batch, requested or preferred)
    if pipeline_for is not None:
        pipe = pipeline_for(top)
    else:
        read_bound, post_bound = RuntimePipeline.bounds(top, workers, readers, queue_size)
        pipe = Pipeline(workers=workers, tiles_queued=read_bound + post_bound + top * in_flight)
    if max_memory is not None:
        limit = parse_size(max_memory)
        # the whole process must stay under --max-memory; what the machine has left must still cover the rest
        if limit <= host.bytes + held:
            host = Available(limit, f"--max-memory {max_memory}")
        else:
            host = Available(host.bytes + held, f"{host.source}, below --max-memory {max_memory}")
    else:
        host = Available(host.bytes + held, host.source)
    return choose_batch(
        fp,
        requested=requested,
        preferred=preferred,
        max_batch=max_batch,
        host=host,
        pipeline=pipe,
        device=device,
        held=held,
        preferred_why=why,
    )


def plan_run_memory(
    backend: Any, settings: Any, pipeline_for: Callable[[int], Pipeline] | None = None
) -> BatchPlan:
    """`plan_run` for a `RunSettings` and the backend `open_run_backend(settings)` opened (not yet active):
    `cellvit-trt run` and each Ray worker plan the same way, each on its own machine's memory; `serve`
    passes its `ServeSettings` with `pipeline_for` (see `plan_run`)."""
    from cellvit_trt.runtime.backends import run_backend_spec

    return plan_run(
        backend,
        run_backend_spec(settings),
        requested=settings.batch,
        max_memory=settings.max_memory,
        workers=settings.post_workers,
        readers=settings.reader_threads(backend.kind) if pipeline_for is None else 1,
        queue_size=getattr(settings, "queue_size", None),
        in_flight=min(settings.in_flight, backend.max_in_flight),
        cache_dir=settings.cache_dir,
        pipeline_for=pipeline_for,
    )
