"""PyTorch backend: the reference. It runs the export stage's `DeploymentGraph` module (the very module that
is
exported to ONNX), so normalisation, decisions (argmax of softmax in FP32) and output dtypes are identical to
the ONNX/TensorRT backends by construction.

FP32 by default; `precision="fp16"` on CUDA runs the model under `torch.autocast("cuda", float16)` like
upstream's
`mixed_precision`, with the decisions still in FP32.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import numpy as np

from cellvit_trt.errors import DeviceError, InputError, require
from cellvit_trt.runtime.backends.base import Backend, ModelMeta, normalise_outputs

log = logging.getLogger(__name__)


class TorchBackend(Backend):
    kind = "torch"

    def __init__(
        self,
        checkpoint: str | Path,
        device: str = "cpu",
        precision: str = "fp32",
        batch: int = 8,
        tile_size: int = 1024,
        tokens: bool = False,
        hv_dtype: str = "float16",
        threads: int = 0,
    ):
        super().__init__(f"torch:{Path(checkpoint).name}")
        self.checkpoint = Path(checkpoint)
        self.device_name = device
        self.precision = precision
        self.batch = int(batch)
        self.tile_size_request = int(tile_size)
        self.tokens = tokens
        self.hv_dtype = hv_dtype
        self.threads = int(threads)
        if precision not in ("fp32", "fp16"):
            raise InputError(f"torch backend: precision must be 'fp32' or 'fp16', got {precision!r}")

    def _activate(self) -> None:
        torch = require("torch", "export", "the PyTorch backend")
        from cellvit_trt.export.wrapper import DeploymentGraph
        from cellvit_trt.models import load_checkpoint

        if self.device_name.startswith("cuda") and not torch.cuda.is_available():
            raise DeviceError(
                f"torch backend: device {self.device_name!r} asked for, but PyTorch sees no CUDA GPU"
            )
        if self.precision == "fp16" and not self.device_name.startswith("cuda"):
            log.warning(
                "torch backend: fp16 autocast is a CUDA feature; running FP32 on %s", self.device_name
            )
        if self.threads:
            torch.set_num_threads(self.threads)
        model, info = load_checkpoint(self.checkpoint)
        hv = {"float16": torch.float16, "float32": torch.float32}[self.hv_dtype]
        self._torch = torch
        self._device = torch.device(self.device_name)
        self._graph = DeploymentGraph(model.eval(), info.mean, info.std, hv_dtype=hv, tokens=self.tokens)
        self._graph = self._graph.to(self._device).eval()
        self.info = info
        self.tile_size = self.tile_size_request
        if self.tile_size % 16:
            raise InputError(f"torch backend: tile size must be a multiple of 16, got {self.tile_size}")
        self.max_batch = self.batch
        self.output_names = tuple(self._graph.output_names)
        self.meta = ModelMeta.from_json(
            {**info.to_metadata(), "tile_size": self.tile_size, "precision": self.precision},
            self.tile_size,
            str(self.checkpoint),
        )

    def _deactivate(self) -> None:
        self._graph = None

    def _autocast(self):
        if self.precision == "fp16" and self._device.type == "cuda":
            return self._torch.autocast("cuda", dtype=self._torch.float16)
        return contextlib.nullcontext()

    def _forward(self, x):
        with self._torch.inference_mode(), self._autocast():
            return self._graph(x)

    def _infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        x = self._torch.from_numpy(images).to(self._device)
        outs = self._forward(x)
        raw = {n: o.cpu().numpy() for n, o in zip(self.output_names, outs, strict=True)}
        return normalise_outputs(raw, self.name)

    def describe(self) -> dict:
        return {
            **super().describe(),
            "device": self.device_name,
            "precision": self.precision,
            "checkpoint": str(self.checkpoint),
        }
