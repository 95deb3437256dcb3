"""INT8 calibration tiles from real data: tissue tiles drawn from slides, or the tiles of an image folder.

The plan (which file, which tile) is fixed up front from thumbnails, seeded; pixels are read lazily when the
calibrator asks, so 500 tiles of 1024² never sit in memory at once. Reading goes through
`cellvit_trt.runtime.sources` (OpenSlide/tiffslide for slides, OpenCV/Pillow for images) at the graph's
target mpp and tile size; tissue tiles are chosen by `cellvit_trt.runtime.tissue.detect_tissue`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cellvit_trt.errors import InputError

log = logging.getLogger(__name__)

RECOMMENDED_TILES = 500  # "at least 500 for CNN and ViT models" (NVIDIA Model-Optimizer onnx_ptq README)
TISSUE_MIN_FRACTION = 0.25


def _candidate_files(path: Path) -> list[Path]:
    """A file, or the slides and images of a folder (recognised by content: runtime.sources.expand_inputs)."""
    from cellvit_trt.runtime.sources import expand_inputs

    if not path.exists():
        raise InputError(f"calibration source {path}: no such file or folder")
    try:
        return expand_inputs(path)
    except InputError as exc:
        raise InputError(
            f"calibration folder {path}: no images or slides in it ({exc}); INT8 calibration needs real "
            "H&E tiles"
        ) from exc


@dataclass(frozen=True)
class _Pick:
    file: Path
    row: int
    col: int


class CalibrationPlan:
    """`len(plan)` tiles; `plan.batches(b)` yields uint8 [b,S,S,3] batches read on demand."""

    def __init__(self, picks: list[_Pick], tile_size: int, overlap: int, target_mpp: float, source: Path):
        self.picks, self.tile_size, self.overlap, self.target_mpp, self.source = (
            picks,
            tile_size,
            overlap,
            target_mpp,
            source,
        )

    def __len__(self) -> int:
        return len(self.picks)

    def _open(self, file: Path):
        from cellvit_trt.runtime.sources import open_source

        return open_source(
            file, target_mpp=self.target_mpp, tile_size=self.tile_size, overlap=self.overlap // 2
        )

    def read(self, start: int, stop: int) -> np.ndarray:
        out = np.empty((stop - start, self.tile_size, self.tile_size, 3), np.uint8)
        by_file: dict[Path, list[tuple[int, _Pick]]] = {}
        for i in range(start, stop):
            by_file.setdefault(self.picks[i].file, []).append((i - start, self.picks[i]))
        for file, items in by_file.items():
            with self._open(file) as src:
                for j, p in items:
                    out[j] = src.read_tile(p.row, p.col).image
        return out


def plan_calibration(
    path: str | Path, n_tiles: int, tile_size: int, overlap: int = 64, target_mpp: float = 0.25, seed: int = 0
) -> CalibrationPlan:
    """Choose up to `n_tiles` tissue tiles, spread over all files, seeded. Warns below 500 tiles."""
    from cellvit_trt.runtime.sources import open_source
    from cellvit_trt.runtime.tissue import TissueSettings, detect_tissue

    path = Path(path)
    files = _candidate_files(path)
    rng = np.random.default_rng(seed)
    per_file: list[list[_Pick]] = []
    for file in files:
        # `overlap` is the total shared by neighbours (metadata convention); the tile grid takes it per side
        with open_source(file, target_mpp=target_mpp, tile_size=tile_size, overlap=overlap // 2) as src:
            grid = src.grid
            # the runtime's tissue detection (Otsu on a thumbnail's saturation) with a higher bar: calibration
            # wants tiles that are mostly tissue, not the 1 % upstream needs to process a tile
            plan = detect_tissue(src, TissueSettings(min_tissue_ratio=TISSUE_MIN_FRACTION))
            tissue = [_Pick(file, r, c) for r, c in plan.tiles]
            # an image handed in as a tile may be pale; a slide's blank tiles are never wanted
            small = grid.rows * grid.cols <= 4
            picks = tissue or ([_Pick(file, r, c) for r, c in grid.tiles()] if small else [])
            order = rng.permutation(len(picks))
            per_file.append([picks[i] for i in order])
    # round robin over files so every slide contributes
    chosen: list[_Pick] = []
    depth = 0
    while len(chosen) < n_tiles and any(depth < len(p) for p in per_file):
        for p in per_file:
            if depth < len(p) and len(chosen) < n_tiles:
                chosen.append(p[depth])
        depth += 1
    if not chosen:
        raise InputError(
            f"calibration source {path}: no tissue tiles found in {len(files)} file(s) "
            f"(tiles need >= {TISSUE_MIN_FRACTION:.0%} stained pixels)"
        )
    if len(chosen) < RECOMMENDED_TILES:
        log.warning(
            "INT8 calibration on %d tiles from %s; at least %d are recommended for ViT models "
            "(fewer tiles give less reliable activation ranges)",
            len(chosen),
            path,
            RECOMMENDED_TILES,
        )
    return CalibrationPlan(chosen, tile_size, overlap, target_mpp, path)
