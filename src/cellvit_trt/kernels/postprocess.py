"""`PostProcessor`: deployment-graph maps of a tile -> instance map + cell table, as cellvit==1.0.9.

Steps (upstream `DetectionCellPostProcessor`, WSI path; docs/kernels.md maps them line by line):
1. foreground 4-connected components < blob_min_size removed;
2. relief = -blur((1 - edge energy) * fg) from the min-max normalised HV maps;
3. markers = fg minus high-energy pixels, holes filled, elliptic opening, components < object_size removed;
4. exact skimage watershed of the relief from the markers inside the foreground (Numba);
5. ids renumbered 1..N, per-cell bbox / centroid / type vote in one pass, first OpenCV contour per cell.

Steps 2-5 run only where the foreground can be affected (`_labels_by_region`: foreground pixels, foreground
groups' boxes; docs/kernels.md "Regions" says why that is exact), so a tile costs about in proportion to its
nuclei. What stays tile-wide: one pass over the HV maps for their extremes, a float32 row pass bounding the
Sobel extremes, the opening (`opening.py`), and scans that skip empty 8-pixel words. Where the region
kernels are not proven identical to OpenCV on this machine (`replicas.region_path_ok`) the whole-tile path
runs instead (`instance_map_full`).
Every heavy step releases the GIL, so `process_batch(..., workers=k)` scales over threads.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise

import cv2
import numpy as np

from cellvit_trt.kernels.cells import measure_instances, measure_present_into
from cellvit_trt.kernels.contours import trace_first_contours
from cellvit_trt.kernels.energy import open_ellipse, relief_and_markers
from cellvit_trt.kernels.inputs import as_batch
from cellvit_trt.kernels.layout import clear_runs, fg_groups, row_runs
from cellvit_trt.kernels.local_markers import fill_groups
from cellvit_trt.kernels.local_relief import local_relief_and_markers
from cellvit_trt.kernels.morphology import (
    fill_holes4,
    kept_runs,
    label4_components,
    label4_filtered,
    label4_runs_into,
)
from cellvit_trt.kernels.opening import open_ellipse_binary
from cellvit_trt.kernels.params import PostProcessParams
from cellvit_trt.kernels.replicas import gaussian_taps, region_path_ok
from cellvit_trt.kernels.table import CellTable, TileCells
from cellvit_trt.kernels.watershed import seeds_from_runs, watershed_fast, watershed_seeded_into
from cellvit_trt.kernels.workspace import workspace

__all__ = ["PostProcessor", "instance_map", "instance_map_full", "warmup", "warmup_tile"]


def instance_map_full(
    fg01: np.ndarray, hv: np.ndarray, params: PostProcessParams
) -> tuple[np.ndarray, np.ndarray]:
    """Raw watershed labels (upstream `_proc_np_hv`) computed over the whole tile with OpenCV's own calls:
    int32 [H,W] with marker label numbers (gaps kept), and the per-label flag "marker cut by the foreground
    mask" (see `watershed_fast`). The reference for `instance_map`, and its fallback."""
    components, members, start = label4_components(fg01, params.blob_min_size)
    blb = (components > 0).view(np.uint8)
    relief, marker = relief_and_markers(
        hv, blb, params.sobel_ksize, params.marker_threshold, params.blur_ksize
    )
    marker = open_ellipse(fill_holes4(marker), params.opening_size)
    markers = label4_filtered(marker, params.object_size)
    return watershed_fast(relief, markers, components, members, start)


def _labels_by_region(fg01: np.ndarray, hv: np.ndarray, params: PostProcessParams, hv_range=None):
    """`instance_map_full`'s result computed only where the foreground can be affected; also returns the
    labels present in it (by marker label, as long as the cut flags) and the row runs of the kept foreground
    (`layout.row_runs`), outside which the labels are 0. hv: float32 or float16 [2, H, W] (the kernels
    decode halves where they read them); `hv_range`: the (min, max) of each HV channel ([2, 2]), if known."""
    if hv.dtype == np.float16:
        hv = hv.view(np.uint16)
    h, w = fg01.shape
    ws = workspace(h, w)
    ws.begin()
    fg_runs = row_runs(fg01)
    components, members, start = label4_runs_into(fg01, params.blob_min_size, *fg_runs, ws.comp, ws.members)
    runs = kept_runs(components, *fg_runs)
    labels = np.zeros((h, w), np.int32)  # calloc: pages away from the foreground are never touched
    if members.size == 0:  # no foreground: no markers, nothing to flood
        ws.dirty = False
        return labels, np.zeros(1, np.bool_), np.zeros(1, np.bool_), runs
    relief, marker, lazy = local_relief_and_markers(
        hv,
        runs,
        components,
        params.sobel_ksize,
        params.marker_threshold,
        gaussian_taps(params.blur_ksize),
        ws.marker,
        ws.cover,
        hv_range,
    )
    group, boxes = fg_groups(components, start.shape[0] - 2, *runs)
    filled = ws.filled
    np.copyto(filled, marker)
    fill_groups(marker, components, group, boxes, *runs, filled)
    opened = open_ellipse_binary(filled, params.opening_size, ws.opened)
    marker_runs = row_runs(opened)
    markers, _, mstart = label4_runs_into(opened, params.object_size, *marker_runs, ws.markers, _NO_MEMBERS)
    n_markers, n_comp = mstart.shape[0] - 2, start.shape[0] - 2
    seeds, cut, seeded, single = seeds_from_runs(markers, components, *marker_runs, n_markers, n_comp)
    watershed_seeded_into(relief, markers, seeds, single, components, members, start, labels, lazy)
    clear_runs(components, *runs)
    clear_runs(markers, *marker_runs)
    ws.dirty = False
    return labels, cut, seeded, runs


def instance_map(
    fg01: np.ndarray, hv: np.ndarray, params: PostProcessParams
) -> tuple[np.ndarray, np.ndarray]:
    """Raw watershed labels (upstream `_proc_np_hv`): int32 [H,W] with marker label numbers (gaps kept), and
    the per-label flag "marker cut by the foreground mask"; bit-identical to `instance_map_full`."""
    if not region_path_ok(params):
        return instance_map_full(fg01, hv.astype(np.float32, copy=False), params)
    labels, cut, _, _ = _labels_by_region(fg01, hv, params)
    return labels, cut


def _cell_table(
    inst, bbox, area, m10, m01, cell_type, type_count, first_x, first_y, split, params
) -> CellTable:
    candidates = np.flatnonzero(cell_type != 0) if params.drop_background else np.arange(len(area))
    if len(area) and int(area.sum()) == inst.size:
        # upstream visits np.unique(inst)[1:], assuming the first value is background: on a tile without any
        # background pixel it silently skips instance 1. Reproduced for parity.
        candidates = candidates[candidates != 0]
    pieces = split[candidates]
    first = first_x[candidates], first_y[candidates]
    points, offsets = trace_first_contours(inst, candidates + 1, *first, pieces)
    bounds = offsets.tolist()  # Python ints: slicing with NumPy scalars costs ~3x more per cell
    contours = [points[a:b] for a, b in pairwise(bounds)]
    n_points = np.diff(offsets)
    for k in np.flatnonzero(pieces):  # instance in several pieces: OpenCV picks its first contour
        i = candidates[k]
        r0, c0, r1, c1 = bbox[i]
        crop = (inst[r0:r1, c0:c1] == i + 1).view(np.uint8)
        contour = cv2.findContours(crop, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0][0].reshape(-1, 2)
        contour = contour.astype(np.int32)
        contour[:, 0] += c0
        contour[:, 1] += r0
        contours[k] = contour
        n_points[k] = len(contour)
    ok = n_points >= params.min_contour_points
    if not ok.any():
        return CellTable.empty()
    idx = candidates[ok]
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
        contours=[c for c, keep in zip(contours, ok.tolist(), strict=True) if keep],
    )


_NO_MEMBERS = np.empty(0, np.int64)
class PostProcessor:
    """Tile post-processor. Thread-safe: holds only frozen settings."""

    def __init__(self, params: PostProcessParams | None = None) -> None:
        self.params = params if params is not None else PostProcessParams()

    def _one(self, fg01: np.ndarray, hv: np.ndarray, type_map: np.ndarray, hv_range=None) -> TileCells:
        """One checked tile; hv float32 or float16 [2, H, W] (`inputs.Batch`)."""
        if region_path_ok(self.params):
            labels, cut, seeded, runs = _labels_by_region(fg01, hv, self.params, hv_range)
            # renumbered in place
            measured = measure_present_into(labels, *runs, type_map, cut, labels, seeded)
        else:
            labels, cut = instance_map_full(fg01, hv.astype(np.float32, copy=False), self.params)
            n_types = int(type_map.max()) + 1 if type_map.size else 1
            measured = measure_instances(labels, type_map, n_types, cut)
        return TileCells(inst_map=measured[0], cells=_cell_table(*measured, self.params))

    def process_tile(self, fg, hv, type_map) -> TileCells:
        """One tile: fg uint8/bool [H,W] (or float prob.), hv f16/f32 [2,H,W], type_map uint8 [H,W]."""
        b = as_batch(fg, hv, type_map, self.params.fg_threshold)
        if b.batched:
            from cellvit_trt.errors import InputError

            raise InputError(f"fg: process_tile expects one tile [H, W], got {b.fg.shape}; use process_batch")
        return self._one(b.fg[0], b.hv[0], b.type_map[0], None if b.hv_range is None else b.hv_range[0])

    def process_batch(self, fg, hv, type_map, workers: int = 1) -> list[TileCells]:
        """A batch ([N,H,W], [N,2,H,W], [N,H,W]) or one tile; `workers` > 1 runs tiles on a thread pool."""
        b = as_batch(fg, hv, type_map, self.params.fg_threshold)

        def one(i: int) -> TileCells:
            return self._one(b.fg[i], b.hv[i], b.type_map[i], None if b.hv_range is None else b.hv_range[i])

        n = b.fg.shape[0]
        if workers <= 1 or n <= 1:
            return [one(i) for i in range(n)]
        with ThreadPoolExecutor(max_workers=min(workers, n)) as pool:
            return list(pool.map(one, range(n)))


def warmup_tile() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 64x64 tile with two touching nuclei and an isolated one: (fg uint8, hv float16, type_map uint8)."""
    yy, xx = np.mgrid[:64, :64]
    fg = np.zeros((64, 64), np.uint8)
    hv = np.zeros((2, 64, 64), np.float32)
    for cy, cx in ((20, 20), (20, 32), (45, 40)):
        disk = ((yy - cy) ** 2 + (xx - cx) ** 2 <= 49) & (fg == 0)
        fg[disk] = 1
        hv[0][disk] = (xx - cx)[disk] / 7.0
        hv[1][disk] = (yy - cy)[disk] / 7.0
    return fg, hv.astype(np.float16), fg.copy()


def warmup(params: PostProcessParams | None = None) -> float:
    """Compile (or load from Numba's cache) every kernel on `warmup_tile()`; returns the seconds spent.

    The first call in a fresh environment compiles for ~15 s of CPU; later processes load the cache in well
    under a second. Call it at start-up (or at install time) to keep that cost out of the first tile.
    """
    import time

    t0 = time.perf_counter()
    PostProcessor(params).process_tile(*warmup_tile())
    return time.perf_counter() - t0
