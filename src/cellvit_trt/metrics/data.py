"""Tiles for `validate`: a PanNuke fold, synthetic tiles with ground truth, or tiles of images/slides.

Each yields `Sample`s: one uint8 RGB tile, its ground truth (`Instances`) where known, its tissue name.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cellvit_trt.errors import InputError
from cellvit_trt.metrics.instances import Instances


@dataclass(frozen=True)
class Sample:
    image: np.ndarray  # uint8 [t, t, 3]
    truth: Instances | None
    tissue: str | None
    name: str


@dataclass(frozen=True)
class DataSpec:
    kind: str  # "pannuke" | "synthetic" | "images"
    path: Path | None
    count: int  # tiles wanted (0 = all, for PanNuke)
    tile_size: int  # data tile size (0 = the model's)


def _evenly(n_total: int, n: int) -> list[int]:
    if n <= 0 or n >= n_total:
        return list(range(n_total))
    return sorted({int(round(i * (n_total - 1) / max(n - 1, 1))) for i in range(n)})


def parse_data(spec: str | Path, limit: int) -> DataSpec:
    """'synthetic' / 'synthetic:N', a PanNuke fold folder, or an image/slide file or folder of images."""
    s = str(spec)
    if s == "synthetic" or s.startswith("synthetic:"):
        count = limit
        if ":" in s:
            try:
                count = int(s.split(":", 1)[1])
            except ValueError as exc:
                raise InputError(f"--data {s}: expected 'synthetic:N' with N a number of tiles") from exc
        if count <= 0:
            raise InputError(f"--data {s}: need at least one synthetic tile")
        return DataSpec("synthetic", None, count, 0)
    path = Path(s)
    if not path.exists():
        raise InputError(
            f"--data {path}: no such file or folder (expected a PanNuke fold folder, an image, a "
            "slide, a folder of images, or 'synthetic:N')"
        )
    if path.is_dir() and any(path.rglob("masks.npy")):
        return DataSpec("pannuke", path, limit, 0)
    return DataSpec("images", path, limit, 0)


def pannuke_samples(path: Path, limit: int) -> tuple[int, int, Iterator[Sample]]:
    """(tile size, number of tiles, samples) of a PanNuke fold; `limit` tiles spread evenly over the fold."""
    from cellvit_trt.metrics.pannuke import open_pannuke_fold

    fold = open_pannuke_fold(path)
    h, w = fold.tile_shape
    if h != w:
        raise InputError(f"PanNuke fold {path}: tiles must be square, got {h}x{w}")
    idx = _evenly(len(fold), limit)

    def gen() -> Iterator[Sample]:
        for i in idx:
            yield Sample(fold.image(i), fold.instances(i), fold.tissue(i), f"{fold.root.name}[{i}]")

    return h, len(idx), gen()


def synthetic_samples(count: int, tile_size: int, seed: int = 0) -> tuple[int, int, Iterator[Sample]]:
    from cellvit_trt.synthetic.tile import generate_tile
    from cellvit_trt.synthetic.world import TISSUE_NAMES

    def gen() -> Iterator[Sample]:
        for k in range(count):
            t = generate_tile(tile_size, seed=seed + k)
            truth = Instances.from_maps(t.inst_map, t.type_map, name=f"synthetic tile {seed + k}")
            tissue = TISSUE_NAMES[t.tissue] if 0 <= t.tissue < len(TISSUE_NAMES) else "mixed"
            yield Sample(t.image, truth, tissue, f"synthetic[{seed + k}]")

    return tile_size, count, gen()


def image_samples(
    path: Path, limit: int, tile_size: int, target_mpp: float, mpp: float | None = None
) -> tuple[int, int, Iterator[Sample]]:
    """Tissue tiles (model tile size, no overlap) of an image, slide or folder of images, spread evenly."""
    from cellvit_trt.runtime.sources import expand_inputs, open_source
    from cellvit_trt.runtime.tissue import detect_tissue

    files = expand_inputs(path)
    per_file = math.ceil(limit / len(files)) if limit > 0 else 0
    plans = []
    for f in files:
        with open_source(f, target_mpp=target_mpp, mpp=mpp, tile_size=tile_size, overlap=0) as src:
            kept = detect_tissue(src).tiles or list(src.grid.tiles())
            plans.append((f, [kept[i] for i in _evenly(len(kept), per_file)]))
    total = sum(len(p) for _, p in plans)
    if limit > 0 and total > limit:
        total = limit

    def gen() -> Iterator[Sample]:
        done = 0
        for f, sel in plans:
            with open_source(f, target_mpp=target_mpp, mpp=mpp, tile_size=tile_size, overlap=0) as src:
                for tile in src.tiles(sel):
                    if done >= total:
                        return
                    done += 1
                    yield Sample(tile.image, None, None, f"{Path(f).name}[{tile.row},{tile.col}]")

    return tile_size, total, gen()
