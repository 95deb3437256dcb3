"""Hyperparameters of a CellViT network as frozen dataclasses: the numbers that make a variant."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from cellvit_trt.errors import ConfigError

PATCH_SIZE = 16  # every CellViT encoder tokenises 16×16 pixel patches

EncoderKind = Literal["vit256", "sam"]


@dataclass(frozen=True)
class EncoderSpec:
    """Vision-transformer encoder.

    `kind="vit256"`: HIPT/DINO ViT with CLS token and a bicubic-interpolated 1-D pos-embed of
    `(img_size // 16) ** 2 + 1` tokens. `kind="sam"`: SAM image encoder (windowed + global attention,
    decomposed relative positions, 2-D pos-embed of `img_size // 16` squared, neck of `out_chans`).
    `extract_layers` are 1-based block indices whose outputs feed the skip decoders (4 of them).
    """

    kind: EncoderKind
    embed_dim: int
    depth: int
    num_heads: int
    extract_layers: tuple[int, int, int, int]
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    img_size: int = 224
    global_attn_indexes: tuple[int, ...] = ()
    window_size: int = 14
    out_chans: int = 256

    def __post_init__(self) -> None:
        if self.kind not in ("vit256", "sam"):
            raise ConfigError(f"model.encoder: expected 'vit256' or 'sam', got {self.kind!r}")
        for name in ("embed_dim", "depth", "num_heads", "img_size"):
            if int(getattr(self, name)) <= 0:
                raise ConfigError(f"model.{name}: expected a positive integer, got {getattr(self, name)!r}")
        if self.embed_dim % self.num_heads:
            raise ConfigError(
                f"model.embed_dim={self.embed_dim} is not divisible by model.num_heads={self.num_heads}"
            )
        layers = tuple(int(i) for i in self.extract_layers)
        if (
            len(layers) != 4
            or any(not 1 <= i <= self.depth for i in layers)
            or list(layers) != sorted(set(layers))
        ):
            raise ConfigError(
                f"model.extract_layers: expected 4 increasing block indices in 1..{self.depth}, "
                f"got {list(self.extract_layers)}"
            )
        object.__setattr__(self, "extract_layers", layers)
        object.__setattr__(self, "global_attn_indexes", tuple(int(i) for i in self.global_attn_indexes))
        if self.img_size % PATCH_SIZE:
            raise ConfigError(f"model.img_size: expected a multiple of {PATCH_SIZE}, got {self.img_size}")


@dataclass(frozen=True)
class DecoderDims:
    """Channel widths of the U-Net decoder.

    `skip_dim_11`, `skip_dim_12`, `bottleneck_dim` follow upstream's names. `stage_dims` are the widths at
    full, 1/2 and 1/4 resolution (upstream hard-codes 64, 128, 256) and `stem_dim` the first conv of
    `decoder0` (upstream 32); they are parameters here only so that small variants can shrink them.
    """

    skip_dim_11: int
    skip_dim_12: int
    bottleneck_dim: int
    stage_dims: tuple[int, int, int] = (64, 128, 256)
    stem_dim: int = 32

    def __post_init__(self) -> None:
        object.__setattr__(self, "stage_dims", tuple(int(d) for d in self.stage_dims))
        dims = (self.skip_dim_11, self.skip_dim_12, self.bottleneck_dim, *self.stage_dims, self.stem_dim)
        if len(self.stage_dims) != 3 or any(int(d) <= 0 for d in dims):
            raise ConfigError(f"model.decoder: expected positive widths, got {self}")

    @classmethod
    def upstream(cls, embed_dim: int) -> DecoderDims:
        # CellViT.__init__: (256, 128, 312) below 512 embedding channels, else (512, 256, 512)
        if embed_dim < 512:
            return cls(256, 128, 312)
        return cls(512, 256, 512)


@dataclass(frozen=True)
class CellViTSpec:
    """Everything needed to build a CellViT; `name` is the variant ("CellViT256", "SAM-H", "tiny", ...)."""

    name: str
    encoder: EncoderSpec
    decoder: DecoderDims = field(default=None)  # type: ignore[assignment]
    num_nuclei_classes: int = 6
    num_tissue_classes: int = 19
    regression_loss: bool = False

    def __post_init__(self) -> None:
        if self.decoder is None:
            object.__setattr__(self, "decoder", DecoderDims.upstream(self.encoder.embed_dim))
        if int(self.num_nuclei_classes) < 1:
            raise ConfigError(f"data.num_nuclei_classes: expected >= 1, got {self.num_nuclei_classes}")
        if int(self.num_tissue_classes) < 0:
            raise ConfigError(f"data.num_tissue_classes: expected >= 0, got {self.num_tissue_classes}")
