"""Sample tiles for the parity gate: seeded synthetic H&E tiles (`cellvit_trt.synthetic.generate_tile`),
all tissue and full of nuclei, so the cell-level comparison has cells to compare. Each tile has its own seed,
hence its own tissue preset, stain and blur."""

from __future__ import annotations

import numpy as np


def gate_tiles(n: int, tile_size: int, seed: int = 0, mpp: float = 0.25) -> np.ndarray:
    """uint8 [n, S, S, 3] RGB."""
    from cellvit_trt.synthetic import generate_tile

    out = np.empty((n, tile_size, tile_size, 3), np.uint8)
    for i in range(n):
        out[i] = generate_tile(tile_size, seed=seed * 1000 + i, mpp=mpp, glass_fraction=0.0).image
    return out
