"""PyTorch CellViT definitions (ViT-256, SAM-B/L/H, tiny) with official-checkpoint parity.

This subpackage imports torch; nothing outside models/export/training imports it at module level.
"""

from cellvit_trt.models.cellvit import CellViT
from cellvit_trt.models.checkpoint import load_checkpoint, save_checkpoint
from cellvit_trt.models.info import ARCHS, ModelInfo, arch_for, make_info
from cellvit_trt.models.registry import VARIANTS, build_model, custom_spec, variant_spec
from cellvit_trt.models.spec import PATCH_SIZE, CellViTSpec, DecoderDims, EncoderSpec

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
