"""Tissue detection on a slide that is half tissue, half glass."""

from __future__ import annotations

import cv2
import numpy as np
import tifffile

from cellvit_trt.runtime.sources import ArraySource, open_source
from cellvit_trt.runtime.tissue import TissueSettings, background_ratio, detect_tissue


def _half_glass(h: int, w: int, edge: int, seed: int = 0) -> np.ndarray:
    """H&E-like pink/purple texture left of `edge`, bright glass with sensor noise right of it."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (h // 24 + 2, w // 24 + 2), dtype=np.uint8)
    t = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC).astype(np.float32) / 255
    pink, purple = np.array([230, 150, 190]), np.array([120, 60, 160])
    img = (pink * (1 - t[..., None]) + purple * t[..., None]).astype(np.uint8)
    glass = np.clip(240 + rng.normal(0, 3, (h, w - edge, 3)), 0, 255).astype(np.uint8)
    img[:, edge:] = glass
    return img


def test_half_glass_slide_keeps_the_tissue_tiles(tmp_path):
    img = _half_glass(1900, 3800, edge=1800)
    path = tmp_path / "half.tif"
    tifffile.imwrite(
        path,
        img,
        tile=(256, 256),
        photometric="rgb",
        compression="zlib",
        resolution=(4e4, 4e4),
        resolutionunit="CENTIMETER",
    )
    with open_source(path) as src:
        plan = detect_tissue(src, TissueSettings(thumbnail_size=512))
        grid = src.grid
    assert (grid.rows, grid.cols) == (2, 4)
    # tile col 1 covers x in [928, 1952): tissue; col 2 covers [1888, 2912): glass only
    assert plan.tiles == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert (plan.kept, plan.skipped) == (4, 4)
    assert plan.ratio[:, 0].min() > 0.5 and plan.ratio[:, 2:].max() < 0.01
    assert plan.summary()["tiles_skipped"] == 4
    # the per-tile upstream rule agrees: glass tiles are all background
    with ArraySource(img) as arr:
        assert background_ratio(arr.read_tile(0, 3).image) > 0.9
        assert background_ratio(arr.read_tile(0, 0).image) < 0.5
    # threshold 0 keeps everything; a high one keeps only full-tissue tiles
    with ArraySource(img) as arr:
        assert detect_tissue(arr, TissueSettings(min_tissue_ratio=0.0)).kept == 8
        assert detect_tissue(arr, TissueSettings(min_tissue_ratio=0.9)).tiles == [(0, 0), (1, 0)]


def test_all_glass_keeps_nothing_and_all_tissue_keeps_everything():
    glass = _half_glass(1000, 1000, edge=0)
    with ArraySource(glass) as src:
        assert detect_tissue(src).kept == 0
    tissue = _half_glass(1900, 1900, edge=1900)
    with ArraySource(tissue) as src:
        assert detect_tissue(src).kept == 4
