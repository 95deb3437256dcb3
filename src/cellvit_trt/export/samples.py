"""Sample tiles for the parity gate: seeded synthetic H&E tiles (`cellvit_trt.synthetic.generate_tile`),
all tissue and full of nuclei, so the cell-level comparison has cells to compare. Each tile has its own seed,
hence its own tissue preset, stain and blur."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

MAX_GATE_TILES = 64  # a sized gate never draws more (1024² tiles: ~40k cells)
# figures gated by a Wilson interval on cells: the sample needs enough cells for a perfect score to clear them
CELL_PROPORTIONS = ("cell_type_agreement",)


def gate_tiles(n: int, tile_size: int, seed: int = 0, mpp: float = 0.25) -> np.ndarray:
    """uint8 [n, S, S, 3] RGB."""
    from cellvit_trt.synthetic import generate_tile

    out = np.empty((n, tile_size, tile_size, 3), np.uint8)
    for i in range(n):
        out[i] = generate_tile(tile_size, seed=seed * 1000 + i, mpp=mpp, glass_fraction=0.0).image
    return out


def cells_needed(thresholds: Any, confidence: float = 0.95) -> int:
    """Cells at which a perfect score's Wilson lower bound reaches the strictest cell-proportion threshold
    (n / (n + z²) >= t, so n >= t z² / (1 - t)); 0 when no such figure is gated."""
    from cellvit_trt.metrics.intervals import z_value

    z2 = z_value(confidence) ** 2
    limits = [thresholds.min[n] for n in CELL_PROPORTIONS if n in thresholds.min and thresholds.min[n] < 1]
    return max((math.ceil(t * z2 / (1 - t)) for t in limits), default=0)


def sized_gate_tiles(
    thresholds: Any, tile_size: int, seed: int = 0, mpp: float = 0.25, margin: float = 2.0
) -> tuple[np.ndarray, int]:
    """Gate tiles sized from the statistics: at least the precision's recommended tile count (between-tile
    variation needs tiles), and enough nuclei that the cell-level intervals can clear the thresholds
    (`margin` x `cells_needed`: the candidate loses some cells, and tiles cluster them). At most
    MAX_GATE_TILES. The synthetic truth tells how many nuclei each tile holds before any inference.
    Returns (uint8 [n, S, S, 3] tiles, their nuclei)."""
    from cellvit_trt.synthetic import generate_tile

    want = cells_needed(thresholds) * margin
    images, cells = [], 0
    while len(images) < MAX_GATE_TILES and (len(images) < thresholds.recommended_tiles or cells < want):
        t = generate_tile(tile_size, seed=seed * 1000 + len(images), mpp=mpp, glass_fraction=0.0)
        images.append(t.image)
        cells += len(t.cells.id)
    return np.stack(images), cells
