"""ONNX Runtime backend: CPU by default; CUDA / TensorRT execution providers when installed and asked for."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cellvit_trt.errors import DeviceError, InputError, require
from cellvit_trt.runtime.backends.base import Backend, ModelMeta, normalise_outputs

log = logging.getLogger(__name__)

PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
}
AUTO_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
GPU_EPS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
# OrtArenaCfg.arena_extend_strategy: 0 = kNextPowerOfTwo (ORT's default), 1 = kSameAsRequested
_SAME_AS_REQUESTED = 1
_cpu_arena_registered = False


def bounded_memory(ort, opts) -> None:
    """Session options under which ONNX Runtime holds one batch's activations, whatever the batch sequence.

    ORT's defaults hold about twice that, more across batch sizes (figures: docs/runtime.md, "Memory"):
    - the memory pattern: from the second run of an input shape ORT allocates one block for the whole planned
      activation set while the arena still holds the first run's chunks (an arena never gives memory back,
      and those chunks cannot serve one large block). Off: with 1024 px tiles every tensor is megabytes, so
      the few hundred allocations per run that it saves cost nothing;
    - the CPU arena's power-of-two growth leaves regions that the next batch fragments and grows past;
      growing by exactly what is requested lets a batch of the same or a smaller size reuse the freed chunks
      (a smaller batch splits them, they coalesce again when freed). The arena itself stays: without one,
      every run page-faults its activations in afresh (+60 % CPU, measured).
    The execution order stays ORT's default: it is deterministic, so the footprint measured once (budget.py)
    holds for every later process; the priority-based order needs 10 % less on average on the demo graph
    but varies by +-15 % from one process to the next (the INT8 calibrator uses it: export/int8.py).
    The CPU arena is a process-wide allocator (`create_and_register_allocator`, the only way ORT takes an
    arena configuration for the CPU), registered once and shared by the process's sessions.
    """
    global _cpu_arena_registered
    opts.enable_mem_pattern = False
    if not _cpu_arena_registered:
        info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
        ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, _SAME_AS_REQUESTED, -1, -1))
        _cpu_arena_registered = True
    opts.add_session_config_entry("session.use_env_allocators", "1")


def gpu_provider_options(provider: str, device: int) -> dict[str, str | int]:
    """The same arena policy on the GPU (CUDA EP option; the TensorRT EP sizes its own memory)."""
    opts: dict[str, str | int] = {"device_id": device}
    if provider == "CUDAExecutionProvider":
        opts["arena_extend_strategy"] = "kSameAsRequested"
    return opts


def resolve_providers(requested: Sequence[str] | str | None, available: Sequence[str]) -> list[str]:
    """Ordered provider list. None/'cpu' → CPU; 'auto' → best installed; names or aliases → exactly those.

    A provider that was asked for by name but is not installed is an error (a silent CPU fall-back would make
    a
    GPU user wait hours without knowing why).
    """
    if not isinstance(requested, str) and requested is not None and len(requested) == 1:
        requested = requested[0]  # `--providers auto` arrives as ["auto"]
    if requested is None or requested == "cpu":
        return ["CPUExecutionProvider"]
    if requested == "auto":
        return [p for p in AUTO_ORDER if p in available]
    names = [requested] if isinstance(requested, str) else list(requested)
    out = []
    for n in names:
        full = PROVIDER_ALIASES.get(n.lower(), n)
        if full not in available:
            raise DeviceError(
                f"ONNX Runtime execution provider {full!r} is not available here "
                f"(installed: {', '.join(available)})"
            )
        out.append(full)
    if "CPUExecutionProvider" not in out:
        out.append("CPUExecutionProvider")
    return out


class OnnxRuntimeBackend(Backend):
    kind = "onnxruntime"

    def __init__(
        self,
        onnx_path: str | Path,
        providers: Sequence[str] | str | None = None,
        batch: int = 8,
        threads: int = 0,
        device: int = 0,
    ):
        super().__init__(f"onnxruntime:{Path(onnx_path).name}")
        self.device = int(device)
        self.onnx_path = Path(onnx_path)
        self.requested_providers = providers
        self.batch = int(batch)
        self.threads = int(threads)
        self.providers: list[str] = []
        self._session = None

    def _activate(self) -> None:
        ort = require("onnxruntime", "ort", "the ONNX Runtime backend")
        if not self.onnx_path.is_file():
            raise InputError(f"ONNX graph {self.onnx_path}: file not found")
        self.providers = resolve_providers(self.requested_providers, ort.get_available_providers())
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        threads = self.threads or int(os.environ.get("CELLVIT_TRT_ORT_THREADS", "0") or 0)
        if threads:
            opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        bounded_memory(ort, opts)
        try:
            providers = [
                (p, gpu_provider_options(p, self.device)) if p in GPU_EPS else p for p in self.providers
            ]
            sess = ort.InferenceSession(str(self.onnx_path), sess_options=opts, providers=providers)
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph types; name the file
            raise InputError(f"ONNX graph {self.onnx_path}: ONNX Runtime cannot load it ({exc})") from exc
        missing = [p for p in self.providers if p not in sess.get_providers()]
        if missing:  # ORT drops a provider it cannot create (no CUDA libraries, ...) with only a log line
            msg = (
                f"ONNX Runtime could not start {', '.join(missing)} for {self.onnx_path} (running: "
                f"{', '.join(sess.get_providers())}); check the CUDA/cuDNN/TensorRT libraries"
            )
            if self.requested_providers not in ("auto", ["auto"]):
                raise DeviceError(msg)
            log.warning("%s", msg)
        inputs = sess.get_inputs()
        if len(inputs) != 1 or inputs[0].name != "image":
            raise InputError(
                f"ONNX graph {self.onnx_path}: expected one input 'image' uint8[N,H,W,3], "
                f"got {[(i.name, i.type, i.shape) for i in inputs]}"
            )
        shape = inputs[0].shape
        if (
            inputs[0].type != "tensor(uint8)"
            or len(shape) != 4
            or shape[3] != 3
            or not isinstance(shape[1], int)
        ):
            raise InputError(
                f"ONNX graph {self.onnx_path}: input 'image' must be uint8[N,H,W,3] with fixed H, W; "
                f"got {inputs[0].type}{shape}"
            )
        self.tile_size = int(shape[1])
        self.max_batch = int(shape[0]) if isinstance(shape[0], int) else self.batch
        self.output_names = tuple(o.name for o in sess.get_outputs())
        meta = sess.get_modelmeta().custom_metadata_map.get("cellvit_trt")
        self.meta = ModelMeta.from_json(meta, self.tile_size, str(self.onnx_path))
        self._fixed_batch = isinstance(shape[0], int)
        self._session = sess
        log.info("ONNX Runtime session on %s with providers %s", self.onnx_path, sess.get_providers())

    def _deactivate(self) -> None:
        self._session = None

    def memory_device(self) -> int | None:
        try:
            import onnxruntime as ort

            providers = resolve_providers(self.requested_providers, ort.get_available_providers())
        except Exception:  # noqa: BLE001 - activation reports a missing ORT or provider itself
            return None
        return self.device if any(p in GPU_EPS for p in providers) else None

    def _infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        n = images.shape[0]
        if self._fixed_batch and n < self.max_batch:  # a static-batch graph: pad with white tiles, then slice
            pad = np.full((self.max_batch - n, *images.shape[1:]), 255, np.uint8)
            images = np.concatenate([images, pad])
        raw = self._session.run(list(self.output_names), {"image": images})
        # ORT hands back views of its arena (numpy arrays kept alive by a capsule). Post-processing holds a
        # batch's maps while the next batch runs, and arena chunks pinned by them mid-region make that run
        # extend the arena (+15 % per run at first, measured): copy the (small) decisions out of it instead.
        out = normalise_outputs(
            {k: np.array(v[:n], copy=True) for k, v in zip(self.output_names, raw, strict=True)}, self.name
        )
        del raw
        return out

    def describe(self) -> dict:
        return {**super().describe(), "providers": self.providers, "onnx": str(self.onnx_path)}
