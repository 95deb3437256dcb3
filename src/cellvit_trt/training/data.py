"""Training batches from the synthetic generator: an endless, seeded stream (no epoch, no overfitting).

Tile k of the stream has seed `seed * 1_000_003 + k`; held-out evaluation uses seeds from `EVAL_SEED_BASE` up,
a range training never reaches. A generated tile may be cut into `crops_per_side`^2 crops; targets are
computed on each crop (as upstream does on each PanNuke image), so cut nuclei get their own HV map.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from cellvit_trt.synthetic.targets import make_targets
from cellvit_trt.synthetic.tile import generate_tile

EVAL_SEED_BASE = 2_000_000_000  # held-out tiles: seeds from here on are never used for training
TRAIN_SEED_STRIDE = 1_000_003


@dataclass(frozen=True)
class Batch:
    image: np.ndarray  # uint8 [B, H, W, 3]
    binary: np.ndarray  # int64 [B, H, W]
    hv: np.ndarray  # float32 [B, 2, H, W]
    types: np.ndarray  # int64 [B, H, W]
    tissue: np.ndarray  # int64 [B]


def train_seed(seed: int, k: int) -> int:
    return int(seed) * TRAIN_SEED_STRIDE + int(k)


def make_batch(seeds: list[int], tile_size: int, crops_per_side: int = 1, mpp: float = 0.25) -> Batch:
    """Tiles of `tile_size` px for each seed, each cut into crops_per_side^2 crops."""
    images, binary, hv, types, tissue = [], [], [], [], []
    c = tile_size // crops_per_side
    for s in seeds:
        tile = generate_tile(tile_size, seed=s, mpp=mpp)
        for i in range(crops_per_side):
            for j in range(crops_per_side):
                sl = (slice(i * c, (i + 1) * c), slice(j * c, (j + 1) * c))
                inst = tile.inst_map[sl]
                t = make_targets(inst, tile.inst_types)
                images.append(tile.image[sl])
                binary.append(t.binary)
                hv.append(t.hv)
                types.append(t.type_map)
                tissue.append(tile.tissue)
    return Batch(
        image=np.stack(images),
        binary=np.stack(binary).astype(np.int64),
        hv=np.stack(hv),
        types=np.stack(types).astype(np.int64),
        tissue=np.asarray(tissue, np.int64),
    )


def batch_stream(
    seed: int, tiles_per_batch: int, tile_size: int, crops_per_side: int = 1, start: int = 0
) -> Iterator[Batch]:
    """Endless batches; batch b uses tiles b*n .. (b+1)*n-1 of the seed's stream (n = tiles_per_batch)."""
    b = start
    while True:
        seeds = [train_seed(seed, b * tiles_per_batch + i) for i in range(tiles_per_batch)]
        yield make_batch(seeds, tile_size, crops_per_side)
        b += 1
