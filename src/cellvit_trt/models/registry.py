"""Named variants: each is an encoder spec differing only in numbers (SAM's build_sam.py style)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from cellvit_trt.errors import ConfigError
from cellvit_trt.models.spec import CellViTSpec, DecoderDims, EncoderSpec

if TYPE_CHECKING:
    from cellvit_trt.models.cellvit import CellViT


def _sam(embed_dim: int, depth: int, num_heads: int, global_attn: tuple[int, ...]) -> EncoderSpec:
    # extract layers are the global blocks, 1-based: SAM-B (2,5,8,11) -> (3,6,9,12)
    return EncoderSpec(
        "sam",
        embed_dim,
        depth,
        num_heads,
        tuple(i + 1 for i in global_attn),  # type: ignore[arg-type]
        img_size=1024,
        global_attn_indexes=global_attn,
        window_size=14,
        out_chans=256,
    )


ENCODERS: dict[str, EncoderSpec] = {
    # HIPT ViT-S/16 (vit256_small_dino.pth): pos-embed grid 14×14 from img_size 224
    "CellViT256": EncoderSpec("vit256", 384, 12, 6, (3, 6, 9, 12), img_size=224),
    "SAM-B": _sam(768, 12, 12, (2, 5, 8, 11)),
    "SAM-L": _sam(1024, 24, 16, (5, 11, 17, 23)),
    "SAM-H": _sam(1280, 32, 16, (7, 15, 23, 31)),
    # Small model for tests, CPU training and the demo (docs/models.md): 0.96 M params (3.8 MB fp32),
    # 3.2 GFLOP per 256² tile. Pos-embed grid 16×16 (img_size 256): 256² training tiles need no interpolation.
    "tiny": EncoderSpec("vit256", 96, 4, 3, (1, 2, 3, 4), img_size=256),
}

DECODERS: dict[str, DecoderDims] = {
    "tiny": DecoderDims(
        skip_dim_11=48, skip_dim_12=24, bottleneck_dim=32, stage_dims=(8, 16, 32), stem_dim=8
    ),
}

VARIANTS: tuple[str, ...] = tuple(ENCODERS)


def variant_spec(
    variant: str, num_nuclei_classes: int = 6, num_tissue_classes: int = 19, regression_loss: bool = False
) -> CellViTSpec:
    key = {k.upper(): k for k in ENCODERS}.get(str(variant).upper())
    if key is None:
        raise ConfigError(f"model variant: unknown {variant!r}, expected one of {', '.join(VARIANTS)}")
    return CellViTSpec(
        key,
        ENCODERS[key],
        DECODERS.get(key),
        int(num_nuclei_classes),
        int(num_tissue_classes),
        bool(regression_loss),
    )


def build_model(
    variant: str | CellViTSpec,
    num_nuclei_classes: int = 6,
    num_tissue_classes: int = 19,
    regression_loss: bool = False,
    **train_kwargs: float,
) -> CellViT:
    """Build a randomly initialised CellViT. `variant` is a name from VARIANTS or a full CellViTSpec
    (then the class counts given here override the spec's only if the spec is a name).
    `train_kwargs`: drop_rate, attn_drop_rate, drop_path_rate (training only, not in the state dict)."""
    from cellvit_trt.models.cellvit import CellViT

    if isinstance(variant, CellViTSpec):
        spec = variant
    else:
        spec = variant_spec(variant, num_nuclei_classes, num_tissue_classes, regression_loss)
    return CellViT(spec, **train_kwargs)


def custom_spec(
    name: str, encoder: EncoderSpec, decoder: DecoderDims | None = None, **heads: int | bool
) -> CellViTSpec:
    """A non-registered variant (saved with arch "CellViTCustom"); `heads`: class counts, regression_loss."""
    return replace(CellViTSpec(name, encoder, decoder), **heads)
