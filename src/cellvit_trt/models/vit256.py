"""HIPT ViT-256 encoder (DINO ViT-S/16) as used by CellViT256, op-for-op as upstream.

Adapted from TIO-IKIM/CellViT-Inference cellvit/models/base/vision_transformer.py and
cellvit/models/cell_segmentation/backbones.py::ViTCellViT (itself from facebookresearch/dino).
Numerics that matter for bit parity: attention is the explicit softmax((q @ kᵀ) * scale) (not SDPA),
GELU is exact, LayerNorm eps is 1e-6, and the pos-embed is resized with `scale_factor`, not `size`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cellvit_trt.models.spec import PATCH_SIZE, EncoderSpec


class Attention(nn.Module):
    def __init__(
        self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0
    ):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        # (B, N, 3C) -> (3, B, heads, N, head_dim)
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)  # scale after the product, as DINO
        attn = self.attn_drop(attn)
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(x))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # exact erf GELU
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class DropPath(nn.Module):
    """Stochastic depth per sample; identity in eval mode."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = (
            keep + torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device)
        ).floor_()
        return x.div(keep) * mask


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        qkv_bias: bool,
        drop: float,
        attn_drop: float,
        drop_path: float,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_drop, drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    def __init__(self, in_chans: int, embed_dim: int, patch_size: int = PATCH_SIZE):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, E, h, w) -> (B, h*w, E)


def interpolate_pos_embed(pos_embed: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """DINO's `interpolate_pos_encoding` for an (h, w) token grid: (1, 1+N, E) -> (1, 1+h*w, E).

    Skipped only when the grid already has N tokens and h == w. The `+0.1` and the use of
    `scale_factor` (not `size`) are kept because they change the bicubic weights, hence the numbers.
    """
    n = pos_embed.shape[1] - 1
    if h * w == n and h == w:
        return pos_embed
    side = int(math.sqrt(n))
    dim = pos_embed.shape[-1]
    grid = pos_embed[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2)  # (1, E, side, side)
    grid = F.interpolate(
        grid, scale_factor=((h + 0.1) / math.sqrt(n), (w + 0.1) / math.sqrt(n)), mode="bicubic"
    )
    if grid.shape[-2:] != (h, w):
        raise ValueError(f"pos-embed interpolation gave a {tuple(grid.shape[-2:])} grid, expected {(h, w)}")
    grid = grid.permute(0, 2, 3, 1).reshape(1, h * w, dim)
    return torch.cat((pos_embed[:, :1], grid), dim=1)


class ViT256Encoder(nn.Module):
    """Returns `(tissue_logits [B, T], skips)`; skips are the pre-norm outputs of the 4 extract layers
    without CLS, as (B, E, H/16, W/16). `norm` and `head` serve only the tissue classifier."""

    def __init__(
        self,
        spec: EncoderSpec,
        num_classes: int,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        e = spec.embed_dim
        self.embed_dim = e
        self.extract_layers = spec.extract_layers
        self.patch_embed = PatchEmbed(in_chans, e)
        grid = spec.img_size // PATCH_SIZE
        self.cls_token = nn.Parameter(torch.zeros(1, 1, e))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, e))  # 224 -> 14x14 + CLS = 197
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = [
            drop_path_rate * i / max(spec.depth - 1, 1) for i in range(spec.depth)
        ]  # linspace(0, rate, depth)
        self.blocks = nn.ModuleList(
            Block(e, spec.num_heads, spec.mlp_ratio, spec.qkv_bias, drop_rate, attn_drop_rate, dpr[i])
            for i in range(spec.depth)
        )
        self.norm = nn.LayerNorm(e, eps=1e-6)
        self.head = nn.Linear(e, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def pos_embed_for(self, h: int, w: int) -> torch.Tensor:
        """Pos-embed for an (h, w) token grid; a constant for a fixed input size (export may freeze it)."""
        return interpolate_pos_embed(self.pos_embed, h, w)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        B, _, H, W = x.shape
        h, w = H // PATCH_SIZE, W // PATCH_SIZE
        x = self.patch_embed(x)  # (B, h*w, E)
        x = torch.cat((self.cls_token.expand(B, -1, -1), x), dim=1)  # (B, 1+h*w, E)
        x = self.pos_drop(x + self.pos_embed_for(h, w))
        skips = []
        for i, blk in enumerate(self.blocks, start=1):
            x = blk(x)
            if i in self.extract_layers:
                skips.append(x)
        logits = self.head(self.norm(x)[:, 0])
        # drop CLS, (B, h*w, E) -> (B, E, h, w)
        skips = [z[:, 1:, :].transpose(-1, -2).view(-1, self.embed_dim, h, w) for z in skips]
        return logits, skips
