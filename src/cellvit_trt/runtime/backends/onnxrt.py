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
        try:
            gpu_eps = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
            providers = [(p, {"device_id": self.device}) if p in gpu_eps else p for p in self.providers]
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

    def _infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        n = images.shape[0]
        if self._fixed_batch and n < self.max_batch:  # a static-batch graph: pad with white tiles, then slice
            pad = np.full((self.max_batch - n, *images.shape[1:]), 255, np.uint8)
            images = np.concatenate([images, pad])
        raw = self._session.run(list(self.output_names), {"image": images})
        out = normalise_outputs(dict(zip(self.output_names, raw, strict=True)), self.name)
        return {k: v[:n] for k, v in out.items()}

    def describe(self) -> dict:
        return {**super().describe(), "providers": self.providers, "onnx": str(self.onnx_path)}
