"""Convolutional decoder blocks, layer-for-layer as upstream.

Adapted from TIO-IKIM/CellViT-Inference cellvit/models/utils/blocks.py (state-dict keys `block.N.*` kept).
"""

from __future__ import annotations

import torch
from torch import nn


class Conv2DBlock(nn.Module):
    """Conv k×k (same padding) → BatchNorm → ReLU → Dropout; keys `block.0` conv, `block.1` BN."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride=1, padding=(kernel_size - 1) // 2),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class Deconv2DBlock(nn.Module):
    """ConvTranspose 2×2 s2 (doubles H, W) → Conv k×k → BatchNorm → ReLU → Dropout."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.ConvTranspose2d(
                in_channels, out_channels, kernel_size=2, stride=2, padding=0, output_padding=0
            ),
            nn.Conv2d(out_channels, out_channels, kernel_size, stride=1, padding=(kernel_size - 1) // 2),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


def upsample2x(in_channels: int, out_channels: int) -> nn.ConvTranspose2d:
    """The bare 2×2 stride-2 transposed convolution that ends every upsampling stage."""
    return nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2, padding=0, output_padding=0)
