"""`PostProcessor`: deployment-graph maps of a tile -> instance map + cell table, cell for cell as cellvit==1.0.9.

Steps (upstream `DetectionCellPostProcessor`, WSI path; see docs/kernels.md for the line-by-line mapping):
1. foreground 4-connected components < blob_min_size removed;
2. relief = -blur((1 - edge energy) * fg) from the min-max normalised HV maps (OpenCV filters);
3. markers = fg minus high-energy pixels, holes filled, elliptic opening, components < object_size removed;
4. exact skimage watershed of the relief from the markers inside the foreground (Numba);
5. ids renumbered 1..N, per-cell bbox / centroid / type vote in one pass (Numba), first OpenCV contour per cell.
Every heavy step releases the GIL, so `process_batch(..., workers=k)` scales over threads.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import cv2
import numpy as np

from cellvit_trt.kernels.cells import measure_instances
from cellvit_trt.kernels.energy import open_ellipse, relief_and_markers
from cellvit_trt.kernels.inputs import as_batch
from cellvit_trt.kernels.morphology import fill_holes4, label4_filtered
from cellvit_trt.kernels.params import PostProcessParams
from cellvit_trt.kernels.table import CellTable, TileCells
from cellvit_trt.kernels.watershed import watershed_masked

__all__ = ["PostProcessor", "instance_map"]


def instance_map(fg01: np.ndarray, hv: np.ndarray, params: PostProcessParams) -> np.ndarray:
    """Raw watershed labels (upstream `_proc_np_hv`): int32 [H,W], marker label numbers with gaps."""
    blb = (label4_filtered(fg01, params.blob_min_size) > 0).view(np.uint8)
    relief, marker = relief_and_markers(hv, blb, params.sobel_ksize, params.marker_threshold, params.blur_ksize)
    marker = open_ellipse(fill_holes4(marker), params.opening_size)
    markers = label4_filtered(marker, params.object_size)
    return watershed_masked(relief, markers, blb)


def _first_contour(crop: np.ndarray) -> Optional[np.ndarray]:
    contours = cv2.findContours(crop, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
    return contours[0].reshape(-1, 2) if contours else None


def _cell_table(inst: np.ndarray, bbox, area, m10, m01, cell_type, type_count, params: PostProcessParams) -> CellTable:
    keep = []
    contours = []
    min_pts = params.min_contour_points
    candidates = np.flatnonzero(cell_type != 0) if params.drop_background else np.arange(len(area))
    if len(area) and int(area.sum()) == inst.size:
        # upstream visits np.unique(inst)[1:], assuming the first value is background: on a tile without any
        # background pixel it silently skips instance 1. Reproduced for parity.
        candidates = candidates[candidates != 0]
    for i in candidates:
        r0, c0, r1, c1 = bbox[i]
        crop = (inst[r0:r1, c0:c1] == i + 1).view(np.uint8)
        contour = _first_contour(crop)
        if contour is None or contour.shape[0] < min_pts:
            continue
        contour = contour.astype(np.int32, copy=True)
        contour[:, 0] += c0
        contour[:, 1] += r0
        keep.append(i)
        contours.append(contour)
    if not keep:
        return CellTable.empty()
    idx = np.asarray(keep, np.int64)
    a = area[idx]
    centroid = np.empty((idx.size, 2), np.float64)
    centroid[:, 0] = m10[idx] / a + bbox[idx, 1]
    centroid[:, 1] = m01[idx] / a + bbox[idx, 0]
    tc = type_count[idx]
    return CellTable(
        id=(idx + 1).astype(np.int32),
        bbox=np.ascontiguousarray(bbox[idx], dtype=np.int32),
        centroid=centroid,
        area=a.astype(np.int32),
        type=cell_type[idx].astype(np.int16),
        type_prob=(tc / (a + 1.0e-6)).astype(np.float32),
        type_count=tc.astype(np.int32),
        contours=contours,
    )


class PostProcessor:
    """Tile post-processor. Thread-safe: holds only frozen settings."""

    def __init__(self, params: Optional[PostProcessParams] = None) -> None:
        self.params = params if params is not None else PostProcessParams()

    def _one(self, fg01: np.ndarray, hv: np.ndarray, type_map: np.ndarray) -> TileCells:
        labels = instance_map(fg01, hv, self.params)
        n_types = int(type_map.max()) + 1 if type_map.size else 1
        inst, bbox, area, m10, m01, cell_type, type_count = measure_instances(labels, type_map, n_types)
        return TileCells(inst_map=inst, cells=_cell_table(inst, bbox, area, m10, m01, cell_type, type_count, self.params))

    def process_tile(self, fg, hv, type_map) -> TileCells:
        """One tile: fg uint8/bool [H,W] (or float probability), hv float16/32 [2,H,W], type_map uint8 [H,W]."""
        fg01, hv32, types, batched = as_batch(fg, hv, type_map, self.params.fg_threshold)
        if batched:
            from cellvit_trt.errors import InputError

            raise InputError(f"fg: process_tile expects one tile [H, W], got {fg01.shape}; use process_batch")
        return self._one(fg01[0], hv32[0], types[0])

    def process_batch(self, fg, hv, type_map, workers: int = 1) -> list[TileCells]:
        """A batch ([N,H,W], [N,2,H,W], [N,H,W]) or one tile; `workers` > 1 runs tiles on a thread pool."""
        fg01, hv32, types, _ = as_batch(fg, hv, type_map, self.params.fg_threshold)
        n = fg01.shape[0]
        if workers <= 1 or n <= 1:
            return [self._one(fg01[i], hv32[i], types[i]) for i in range(n)]
        with ThreadPoolExecutor(max_workers=min(workers, n)) as pool:
            return list(pool.map(lambda i: self._one(fg01[i], hv32[i], types[i]), range(n)))
