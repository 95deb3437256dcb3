"""PyTorch CellViT definitions (ViT-256, SAM-B/L/H, tiny) with official-checkpoint parity.

Most of this subpackage imports torch (loaded on first use of a name below); nothing outside
models/export/training imports it at module level.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> submodule. Resolved on first use, so that `cellvit_trt.models.fileformat` (the cheap format check
# that runs before torch is imported) and `cellvit_trt.models.info` stay light.
_EXPORTS = {
    "CellViT": "cellvit",
    "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "ARCHS": "info",
    "ModelInfo": "info",
    "arch_for": "info",
    "make_info": "info",
    "VARIANTS": "registry",
    "build_model": "registry",
    "custom_spec": "registry",
    "variant_spec": "registry",
    "PATCH_SIZE": "spec",
    "CellViTSpec": "spec",
    "DecoderDims": "spec",
    "EncoderSpec": "spec",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'cellvit_trt.models' has no attribute {name!r}")
    return getattr(importlib.import_module(f"cellvit_trt.models.{_EXPORTS[name]}"), name)


__all__ = [
    "ARCHS",
    "PATCH_SIZE",
    "VARIANTS",
    "CellViT",
    "CellViTSpec",
    "DecoderDims",
    "EncoderSpec",
    "ModelInfo",
    "arch_for",
    "build_model",
    "custom_spec",
    "load_checkpoint",
    "make_info",
    "save_checkpoint",
    "variant_spec",
]
