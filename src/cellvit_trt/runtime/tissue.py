"""Tissue detection: which tiles of the grid to process.

    plan = detect_tissue(source, TissueSettings())      # Otsu on a low-resolution thumbnail
    plan.tiles            # [(row, col)] kept, row-major: pass to source.tiles(plan.tiles) and StreamingMerge
    plan.kept, plan.skipped, plan.ratio[row, col]       # counts and tissue fraction per tile
    background_ratio(tile_image)                        # upstream's per-tile HSV rule (push API)

Thumbnail mask (as PathoPatcher's Otsu tissue mask): HSV saturation, median-blurred, thresholded with Otsu;
the threshold is clipped to [MIN_SATURATION, MAX_SATURATION] so that an all-glass thumbnail (Otsu splits
noise) keeps nothing and an all-tissue one keeps pale tissue. Upstream's grey (S <= 10, V >= 70) and black
(V <= 85) pixels are background. A tile is kept when the tissue fraction of its footprint is
>= min_tissue_ratio (upstream's min_intersection_ratio = 0.01). `min_tissue_ratio=0` keeps every tile.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from cellvit_trt.errors import InputError

MIN_SATURATION = 15  # 0..255 HSV saturation; below this nothing is tissue
MAX_SATURATION = 60  # Otsu thresholds above this would drop pale (eosin-only) tissue
MIN_INTERSECTION_RATIO = 0.01  # upstream LivePatchWSIConfig.min_intersection_ratio
GREY = ((0, 0, 70), (180, 10, 255))  # upstream calculate_background_ratio, OpenCV HSV ranges
BLACK = ((0, 0, 0), (180, 255, 85))


@dataclasses.dataclass(frozen=True)
class TissueSettings:
    enabled: bool = True
    min_tissue_ratio: float = MIN_INTERSECTION_RATIO
    thumbnail_size: int = 2048  # longer side of the thumbnail, px
    median_kernel: int = 5  # odd, thumbnail px

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_tissue_ratio <= 1.0:
            raise InputError(f"tissue.min_tissue_ratio: expected 0..1, got {self.min_tissue_ratio}")
        if self.thumbnail_size < 16:
            raise InputError(f"tissue.thumbnail_size: expected >= 16, got {self.thumbnail_size}")


@dataclasses.dataclass(frozen=True)
class TissuePlan:
    tiles: list[tuple[int, int]]  # kept tiles, row-major
    ratio: np.ndarray  # float32 [rows, cols] tissue fraction of each tile footprint
    threshold: int  # saturation threshold used on the thumbnail
    mask: np.ndarray  # uint8 thumbnail tissue mask (1 = tissue)

    @property
    def kept(self) -> int:
        return len(self.tiles)

    @property
    def skipped(self) -> int:
        return int(self.ratio.size) - len(self.tiles)

    def summary(self) -> dict:
        return {
            "tiles_total": int(self.ratio.size),
            "tiles_kept": self.kept,
            "tiles_skipped": self.skipped,
            "saturation_threshold": self.threshold,
        }


def tissue_mask(rgb: np.ndarray, median_kernel: int = 5) -> tuple[np.ndarray, int]:
    """uint8 mask (1 = tissue) of an RGB thumbnail, and the saturation threshold used."""
    hsv = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2HSV)
    sat = cv2.medianBlur(hsv[..., 1], median_kernel) if median_kernel > 1 else hsv[..., 1]
    otsu, _ = cv2.threshold(sat, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    thr = int(np.clip(otsu, MIN_SATURATION, MAX_SATURATION))
    background = cv2.inRange(hsv, *GREY) | cv2.inRange(hsv, *BLACK)
    return ((sat > thr) & (background == 0)).astype(np.uint8), thr


def background_ratio(tile: np.ndarray) -> float:
    """Upstream's per-tile rule (PathoPatcher calculate_background_ratio): grey or black pixel fraction."""
    hsv = cv2.cvtColor(np.ascontiguousarray(tile), cv2.COLOR_RGB2HSV)
    background = cv2.inRange(hsv, *GREY) | cv2.inRange(hsv, *BLACK)
    return float(np.count_nonzero(background)) / background.size


def detect_tissue(source, settings: TissueSettings = TissueSettings()) -> TissuePlan:
    """Tiles of `source.grid` whose footprint holds enough tissue in the thumbnail mask."""
    grid = source.grid
    if not settings.enabled or settings.min_tissue_ratio == 0.0:
        ratio = np.ones((grid.rows, grid.cols), np.float32)
        return TissuePlan(list(grid.tiles()), ratio, 0, np.ones((1, 1), np.uint8))
    thumb, factor = source.thumbnail(settings.thumbnail_size)
    mask, thr = tissue_mask(thumb, settings.median_kernel)
    # integral image: tissue pixels in any thumbnail box in O(1)
    integral = cv2.integral(mask)
    th, tw = mask.shape
    ratio = np.zeros((grid.rows, grid.cols), np.float32)
    for row, col in grid.tiles():
        y0, x0 = grid.origin(row, col)
        # the footprint, clipped to the region (padding is glass), in thumbnail px
        ty0, tx0 = int(max(0, y0) / factor), int(max(0, x0) / factor)
        ty1 = min(th, max(ty0 + 1, int(np.ceil(min(source.info.height, y0 + grid.tile_size) / factor))))
        tx1 = min(tw, max(tx0 + 1, int(np.ceil(min(source.info.width, x0 + grid.tile_size) / factor))))
        area_px = (
            grid.tile_size / factor
        ) ** 2  # ratio over the whole tile, as upstream counts padding as glass
        tissue = integral[ty1, tx1] - integral[ty0, tx1] - integral[ty1, tx0] + integral[ty0, tx0]
        ratio[row, col] = min(1.0, tissue / area_px)
    keep = [(r, c) for r, c in grid.tiles() if ratio[r, c] >= settings.min_tissue_ratio]
    return TissuePlan(keep, ratio, thr, mask)
