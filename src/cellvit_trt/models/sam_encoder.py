"""SAM image encoder (ViT-B/L/H with windowed + global attention) as used by CellViTSAM, op-for-op.

Adapted from facebookresearch/segment-anything modeling/image_encoder.py via TIO-IKIM/CellViT-Inference
cellvit/models/utils/sam_utils.py and backbones.py::ViTCellViTDeit. Differences from plain SAM that CellViT
needs: inputs below 1024² crop the pos-embed (top-left corner, not interpolated) and the encoder also
returns the pre-neck outputs of 4 blocks; the neck feeds only the tissue classifier (mean over H×W).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cellvit_trt.errors import InputError
from cellvit_trt.models.spec import PATCH_SIZE, EncoderSpec


class LayerNorm2d(nn.Module):
    """LayerNorm over channels of a (B, C, H, W) tensor, eps 1e-6 (detectron2/ConvNeXt)."""

    def __init__(self, num_channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class MLPBlock(nn.Module):
    def __init__(self, dim: int, mlp_dim: int):
        super().__init__()
        self.lin1 = nn.Linear(dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.lin1(x)))


def get_rel_pos(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """Relative-position table for q/k lengths, (q_size, k_size, C); linearly resized only on a mismatch
    (e.g. a global block trained for 64 tokens, 127 entries, run on a 16-token grid: 127 -> 31)."""
    max_rel_dist = int(2 * max(q_size, k_size) - 1)
    if rel_pos.shape[0] != max_rel_dist:
        resized = F.interpolate(
            rel_pos.reshape(1, rel_pos.shape[0], -1).permute(0, 2, 1), size=max_rel_dist, mode="linear"
        )
        rel_pos = resized.reshape(-1, max_rel_dist).permute(1, 0)
    q_coords = torch.arange(q_size, device=rel_pos.device)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size, device=rel_pos.device)[None, :] * max(q_size / k_size, 1.0)
    relative = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return rel_pos[relative.long()]


def add_decomposed_rel_pos(
    attn: torch.Tensor,
    q: torch.Tensor,
    rel_pos_h: torch.Tensor,
    rel_pos_w: torch.Tensor,
    size: tuple[int, int],
) -> torch.Tensor:
    """MViTv2 decomposed relative positions for square self-attention (q and k share `size`)."""
    h, w = size
    Rh = get_rel_pos(h, h, rel_pos_h)  # (h, h, C)
    Rw = get_rel_pos(w, w, rel_pos_w)  # (w, w, C)
    B, _, dim = q.shape
    r_q = q.reshape(B, h, w, dim)
    rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, Rh)
    rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, Rw)
    # (B, h*w, h*w) -> (B, h, w, h, w) + broadcasts -> back
    attn = attn.view(B, h, w, h, w) + rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]
    return attn.view(B, h * w, h * w)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, input_size: tuple[int, int]):
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, _ = x.shape
        # (B, H, W, 3C) -> (3, B, heads, H*W, hd) -> 3 x (B*heads, H*W, hd)
        qkv = self.qkv(x).reshape(B, H * W, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, B * self.num_heads, H * W, -1).unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)  # SAM scales q first (DINO scales the product)
        attn = add_decomposed_rel_pos(attn, q, self.rel_pos_h, self.rel_pos_w, (H, W)).softmax(dim=-1)
        x = (attn @ v).view(B, self.num_heads, H, W, -1).permute(0, 2, 3, 1, 4).reshape(B, H, W, -1)
        return self.proj(x)


def window_partition(x: torch.Tensor, ws: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """(B, H, W, C) -> (B*nW, ws, ws, C), zero-padding H, W up to multiples of ws (64 -> 70: 25 windows)."""
    B, H, W, C = x.shape
    pad_h, pad_w = (ws - H % ws) % ws, (ws - W % ws) % ws
    if pad_h > 0 or pad_w > 0:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    Hp, Wp = H + pad_h, W + pad_w
    x = x.view(B, Hp // ws, ws, Wp // ws, ws, C)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, ws, ws, C), (Hp, Wp)


def window_unpartition(
    windows: torch.Tensor, ws: int, pad_hw: tuple[int, int], hw: tuple[int, int]
) -> torch.Tensor:
    """(B*nW, ws, ws, C) -> (B, H, W, C), dropping the padding."""
    (Hp, Wp), (H, W) = pad_hw, hw
    B = windows.shape[0] // (Hp * Wp // ws // ws)
    x = windows.view(B, Hp // ws, Wp // ws, ws, ws, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).contiguous().view(B, Hp, Wp, -1)
    if Hp > H or Wp > W:
        x = x[:, :H, :W, :].contiguous()
    return x


class Block(nn.Module):
    """Pre-norm block in BHWC; `window_size` 0 means global attention."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        qkv_bias: bool,
        window_size: int,
        input_size: tuple[int, int],
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(
            dim, num_heads, qkv_bias, input_size if window_size == 0 else (window_size, window_size)
        )
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio))
        self.window_size = window_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            H, W = x.shape[1], x.shape[2]
            x, pad_hw = window_partition(x, self.window_size)
            x = window_unpartition(self.attn(x), self.window_size, pad_hw, (H, W))
        else:
            x = self.attn(x)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, in_chans: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=PATCH_SIZE, stride=PATCH_SIZE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)  # (B, E, h, w) -> (B, h, w, E)


class SAMEncoder(nn.Module):
    """Returns `(pooled_neck [B, out_chans], skips)`; skips are the 4 extract-layer outputs as (B, E, h, w)
    views of BHWC tensors (channels-last strides, exactly as upstream's `permute`)."""

    def __init__(self, spec: EncoderSpec, in_chans: int = 3):
        super().__init__()
        grid = spec.img_size // PATCH_SIZE
        e = spec.embed_dim
        self.extract_layers = spec.extract_layers
        self.patch_embed = PatchEmbed(in_chans, e)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, e))  # (1, 64, 64, E) for SAM's 1024
        self.blocks = nn.ModuleList(
            Block(
                e,
                spec.num_heads,
                spec.mlp_ratio,
                spec.qkv_bias,
                0 if i in spec.global_attn_indexes else spec.window_size,
                (grid, grid),
            )
            for i in range(spec.depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(e, spec.out_chans, kernel_size=1, bias=False),
            LayerNorm2d(spec.out_chans),
            nn.Conv2d(spec.out_chans, spec.out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(spec.out_chans),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.patch_embed(x)  # (B, h, w, E)
        h, w = x.shape[1], x.shape[2]
        grid = self.pos_embed.shape[1]
        if h > grid or w > grid:
            raise InputError(
                f"SAM encoder: a {h * PATCH_SIZE}x{w * PATCH_SIZE} input exceeds the {grid * PATCH_SIZE}² "
                "pos-embed; upstream crops the pos-embed and cannot run larger tiles"
            )
        # upstream crops [:T, :T] with T = h; identical for square inputs and also right for h != w
        x = x + self.pos_embed[:, :h, :w, :]
        skips = []
        for i, blk in enumerate(self.blocks, start=1):
            x = blk(x)
            if i in self.extract_layers:
                skips.append(x)
        neck = self.neck(x.permute(0, 3, 1, 2))  # (B, out_chans, h, w)
        pooled = neck.reshape(neck.shape[0], neck.shape[1], -1).mean(dim=-1)
        return pooled, [z.permute(0, 3, 1, 2) for z in skips]
