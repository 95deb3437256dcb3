"""CellViT's U-Net decoder: four shared skip decoders and one upsampling branch per output head.

Layer layout and state-dict keys as TIO-IKIM/CellViT-Inference cellvit/models/cell_segmentation/cellvit.py
(`decoder0..3`, `create_upsampling_branch`). Upstream evaluates the shared skip decoders inside every branch
(3× per forward); here `SkipDecoders` outputs are computed once and handed to each branch — same numbers.
"""

from __future__ import annotations

import torch
from torch import nn

from cellvit_trt.models.blocks import Conv2DBlock, Deconv2DBlock, upsample2x
from cellvit_trt.models.spec import DecoderDims


def skip_decoders(embed_dim: int, d: DecoderDims, drop: float = 0.0) -> tuple[nn.Sequential, ...]:
    """`decoder0..3`: image -> full-res features; z1 -> 1/2 res; z2 -> 1/4 res; z3 -> 1/8 res."""
    s0, s1, s2 = d.stage_dims
    decoder0 = nn.Sequential(Conv2DBlock(3, d.stem_dim, 3, drop), Conv2DBlock(d.stem_dim, s0, 3, drop))
    decoder1 = nn.Sequential(
        Deconv2DBlock(embed_dim, d.skip_dim_11, dropout=drop),
        Deconv2DBlock(d.skip_dim_11, d.skip_dim_12, dropout=drop),
        Deconv2DBlock(d.skip_dim_12, s1, dropout=drop),
    )
    decoder2 = nn.Sequential(
        Deconv2DBlock(embed_dim, d.skip_dim_11, dropout=drop),
        Deconv2DBlock(d.skip_dim_11, s2, dropout=drop),
    )
    decoder3 = nn.Sequential(Deconv2DBlock(embed_dim, d.bottleneck_dim, dropout=drop))
    return decoder0, decoder1, decoder2, decoder3


class UpsamplingBranch(nn.Module):
    """One output head. Each stage concatenates **skip first**, then the upsampled deeper features."""

    def __init__(self, embed_dim: int, d: DecoderDims, num_out: int, drop: float = 0.0):
        super().__init__()
        s0, s1, s2 = d.stage_dims
        b = d.bottleneck_dim
        self.bottleneck_upsampler = upsample2x(embed_dim, b)
        self.decoder3_upsampler = nn.Sequential(
            Conv2DBlock(b * 2, b, dropout=drop),
            Conv2DBlock(b, b, dropout=drop),
            Conv2DBlock(b, b, dropout=drop),
            upsample2x(b, s2),
        )
        self.decoder2_upsampler = nn.Sequential(
            Conv2DBlock(s2 * 2, s2, dropout=drop), Conv2DBlock(s2, s2, dropout=drop), upsample2x(s2, s1)
        )
        self.decoder1_upsampler = nn.Sequential(
            Conv2DBlock(s1 * 2, s1, dropout=drop), Conv2DBlock(s1, s1, dropout=drop), upsample2x(s1, s0)
        )
        self.decoder0_header = nn.Sequential(
            Conv2DBlock(s0 * 2, s0, dropout=drop),
            Conv2DBlock(s0, s0, dropout=drop),
            nn.Conv2d(s0, num_out, kernel_size=1, stride=1, padding=0),
        )

    def forward(self, z4: torch.Tensor, skips: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """z4: (B, E, H/16, W/16); skips: decoder0..3 outputs at H, H/2, H/4, H/8 -> (B, num_out, H, W)."""
        s0, s1, s2, s3 = skips
        b = self.bottleneck_upsampler(z4)  # (B, bott, H/8, W/8)
        b = self.decoder3_upsampler(torch.cat([s3, b], dim=1))  # (B, s2, H/4, W/4)
        b = self.decoder2_upsampler(torch.cat([s2, b], dim=1))  # (B, s1, H/2, W/2)
        b = self.decoder1_upsampler(torch.cat([s1, b], dim=1))  # (B, s0, H, W)
        return self.decoder0_header(torch.cat([s0, b], dim=1))
