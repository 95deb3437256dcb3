"""Sample tiles for the parity gate: seeded synthetic H&E-like tiles (cellvit_trt.synthetic), full of nuclei,
so the cell-level comparison has cells to compare."""

from __future__ import annotations

import numpy as np


def gate_tiles(n: int, tile_size: int, seed: int = 0, mpp: float = 0.25) -> np.ndarray:
    """uint8 [n, S, S, 3]: windows of one synthetic slide, spread apart so they show different tissue."""
    from cellvit_trt.synthetic.render import render_window
    from cellvit_trt.synthetic.world import World

    world = World(seed=seed, mpp=mpp)
    out = np.empty((n, tile_size, tile_size, 3), np.uint8)
    for i in range(n):
        out[i] = render_window(world, 0, i * (tile_size + 512), tile_size, tile_size).image
    return out
